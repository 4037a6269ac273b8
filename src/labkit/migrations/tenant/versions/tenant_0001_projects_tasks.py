"""tenant schema: projects and tasks (no tenant_id: the schema is the tenant).

Revision ID: tenant_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "tenant_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        schema="tenant",
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("tenant.projects.id"), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False, server_default="false"),
        schema="tenant",
    )


def downgrade() -> None:
    op.drop_table("tasks", schema="tenant")
    op.drop_table("projects", schema="tenant")
