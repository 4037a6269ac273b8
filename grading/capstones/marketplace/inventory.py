"""The inventory service: products and their stock, reservations per order."""

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
        """The products with these SKUs, in ONE statement (what the gateway's loader calls)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(products).where(products.c.sku.in_(list(skus)))).all()
        return {row.sku: dict(row._mapping) for row in rows}

    def stock(self, sku: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(products.c.stock).where(products.c.sku == sku)).scalar_one()

    def reserve(self, order_id: str, items: dict[str, int]) -> None:
        """Take the stock of every item, or of none (one transaction). Each decrement is one
        conditional UPDATE: the row lock it takes makes a concurrent order wait, then
        re-check ``stock >= qty`` on the row as that order left it. SKUs are locked in a
        fixed order (sorted), so two orders never wait for each other (no deadlock)."""
        with self.engine.begin() as conn:
            for sku in sorted(items):
                qty = items[sku]
                taken = conn.execute(
                    products.update()
                    .where(products.c.sku == sku, products.c.stock >= qty)
                    .values(stock=products.c.stock - qty)
                    .returning(products.c.stock)
                ).first()
                if taken is None:
                    raise OutOfStock(f"out of stock: fewer than {qty} of {sku!r} left")
            conn.execute(
                reservations.insert(),
                [{"order_id": order_id, "sku": s, "qty": q, "status": "reserved"}
                 for s, q in sorted(items.items())],
            )  # fmt: skip

    def release(self, order_id: str) -> int:
        """Give back what ``order_id`` reserved; idempotent: only reservations still
        ``reserved`` are released, so a retried compensation releases nothing twice."""
        with self.engine.begin() as conn:
            released = conn.execute(
                reservations.update()
                .where(reservations.c.order_id == order_id, reservations.c.status == "reserved")
                .values(status="released")
                .returning(reservations.c.sku, reservations.c.qty)
            ).all()
            for row in sorted(released):
                conn.execute(
                    products.update()
                    .where(products.c.sku == row.sku)
                    .values(stock=products.c.stock + row.qty)
                )
        return len(released)
