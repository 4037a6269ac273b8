"""orders service: the local read model of user names, and its position in the stream.

Revision ID: orders_0002
Revises: orders_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "orders_0002"
down_revision = "orders_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_names",
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "stream_positions",
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("last_id", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_positions")
    op.drop_table("user_names")
