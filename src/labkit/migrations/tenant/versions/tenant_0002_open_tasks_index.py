"""tenant schema: an index of the open tasks of a project.

Revision ID: tenant_0002
Revises: tenant_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "tenant_0002"
down_revision = "tenant_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "tasks_open_idx",
        "tasks",
        ["project_id"],
        schema="tenant",
        postgresql_where=sa.text("NOT done"),
    )


def downgrade() -> None:
    op.drop_index("tasks_open_idx", table_name="tasks", schema="tenant")
