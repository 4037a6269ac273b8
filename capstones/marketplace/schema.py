"""Starter: each service's tables, in a MetaData of its own: no table is shared and no foreign key
crosses a service's border (an order names its products by SKU, nothing more)."""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)

# ------------------------------------------------------------------ inventory
inventory = MetaData()
products = Table(
    "products",
    inventory,
    Column("sku", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("stock", Integer, nullable=False),
    # TODO (R2): what stops the stock going below 0 if two orders race? (a constraint is a
    # last line of defence, not the design)
)
reservations = Table(
    "reservations",
    inventory,
    Column("order_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("qty", Integer, nullable=False),
    Column("status", Text, nullable=False),  # reserved | released
    PrimaryKeyConstraint("order_id", "sku"),  # one reservation per order and product
    CheckConstraint("status IN ('reserved', 'released')", name="reservation_status"),
)

# ------------------------------------------------------------------ payments
payments = MetaData()
charges = Table(
    "charges",
    payments,
    Column("order_id", Text, primary_key=True),  # one charge per order: a retry is a no-op
    Column("amount_cents", Integer, nullable=False),
    Column("status", Text, nullable=False),  # captured | refunded
    CheckConstraint("status IN ('captured', 'refunded')", name="charge_status"),
)

# ------------------------------------------------------------------ orders
orders = MetaData()
order_rows = Table(
    "orders",
    orders,
    Column("id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("status", Text, nullable=False),  # pending | confirmed | cancelled
    Column("total_cents", Integer, nullable=False),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('pending', 'confirmed', 'cancelled')", name="order_status"),
)
# TODO (R4): where does an event wait while the process that committed the order is dead?
order_items = Table(
    "order_items",
    orders,
    Column("order_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price_cents", Integer, nullable=False),
    PrimaryKeyConstraint("order_id", "sku"),  # also the index that loads an order's items
)

# ------------------------------------------------------------------ shipping
shipping = MetaData()
parcels = Table(
    "parcels",
    shipping,
    Column("id", Integer, primary_key=True),
    # TODO (R4): an event delivered twice books two parcels. What makes the consumer
    # idempotent: a processed-messages mark (labkit.streams.handle_once), a unique key?
    Column("order_id", Text, nullable=False),
    Column("customer", Text, nullable=False),
)

METADATA = {"inventory": inventory, "payments": payments, "orders": orders, "shipping": shipping}
