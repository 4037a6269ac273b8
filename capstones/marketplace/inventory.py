"""The inventory service: products and their stock, reservations per order.

Starter: ``reserve`` works for one buyer at a time. Run the R2 check (``--only no-oversell``)
to see what 100 buyers at once do to it."""

from sqlalchemy import select

from .schema import products, reservations


class OutOfStock(Exception):
    """Not enough stock for one of the order's items."""


class Inventory:
    def __init__(self, engine) -> None:
        self.engine = engine

    def add_products(self, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(products.insert(), rows)

    def products(self, skus: list[str]) -> dict[str, dict]:
        """The products with these SKUs, in one statement."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(products).where(products.c.sku.in_(list(skus)))).all()
        return {row.sku: dict(row._mapping) for row in rows}

    def stock(self, sku: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(products.c.stock).where(products.c.sku == sku)).scalar_one()

    def reserve(self, order_id: str, items: dict[str, int]) -> None:
        """Take the stock of every item, or of none (one transaction).

        TODO (R2): this reads the stock, decides in Python, then writes. Between the read and
        the write, another order can read the same stock. Make "is there enough?" and "take
        it" one atomic step, and think about two orders that lock the same products in a
        different order."""
        with self.engine.begin() as conn:
            for sku, qty in items.items():
                stock = conn.execute(
                    select(products.c.stock).where(products.c.sku == sku)
                ).scalar_one()
                if stock < qty:
                    raise OutOfStock(f"out of stock: fewer than {qty} of {sku!r} left")
                conn.execute(
                    products.update()
                    .where(products.c.sku == sku)
                    .values(stock=products.c.stock - qty)
                )
            conn.execute(
                reservations.insert(),
                [{"order_id": order_id, "sku": s, "qty": q, "status": "reserved"}
                 for s, q in items.items()],
            )  # fmt: skip

    def release(self, order_id: str) -> int:
        """TODO (R3): give back what ``order_id`` reserved (the saga's compensation for
        ``reserve``). It may be called again for the same order: releasing twice must not
        put the stock back twice."""
        raise NotImplementedError("TODO (R3): release a reservation (see inventory.py)")
