"""inventory service: products with their stock, and one reservation per saga.

Revision ID: inventory_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("saga_id", sa.Text, primary_key=True),
        sa.Column("sku", sa.Text, sa.ForeignKey("products.sku"), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('reserved', 'released')", name="reservation_status"),
    )


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("products")
