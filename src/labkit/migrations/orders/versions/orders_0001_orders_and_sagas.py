"""orders service: orders, and the persisted state of the saga that places each one.

Revision ID: orders_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "orders_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'confirmed', 'cancelled')", name="order_status"),
    )
    op.create_table(
        "sagas",
        sa.Column("id", sa.Text, sa.ForeignKey("orders.id"), primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("done", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("compensated", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("error", sa.Text),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('running', 'compensating', 'completed', 'compensated')",
            name="saga_status",
        ),
    )


def downgrade() -> None:
    op.drop_table("sagas")
    op.drop_table("orders")
