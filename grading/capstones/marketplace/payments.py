"""The payment service, which can be told to fail: ``fail = "decline"`` refuses a charge
(nothing is captured); ``fail = "after_capture"`` captures the money and then fails (a
timeout after the bank said yes): the saga cannot tell the two apart, so it must refund."""

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from .schema import charges

FAILURES = (None, "decline", "after_capture")


class PaymentFailed(Exception):
    """The charge did not go through (or we do not know that it did)."""


class Payments:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.fail: str | None = None

    def charge(self, order_id: str, amount_cents: int) -> None:
        if self.fail == "decline":
            raise PaymentFailed("payment declined (the payment service was told to fail)")
        with self.engine.begin() as conn:
            conn.execute(
                insert(charges)
                .values(order_id=order_id, amount_cents=amount_cents, status="captured")
                .on_conflict_do_nothing(index_elements=["order_id"])
            )
        if self.fail == "after_capture":
            raise PaymentFailed("payment timed out after the capture (told to fail)")

    def refund(self, order_id: str) -> bool:
        """Refund ``order_id``'s charge if it is captured; idempotent (a second call finds
        it refunded and does nothing). True if this call refunded it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                charges.update()
                .where(charges.c.order_id == order_id, charges.c.status == "captured")
                .values(status="refunded")
            )
            return done.rowcount == 1

    def captured_cents(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.coalesce(func.sum(charges.c.amount_cents), 0)).where(
                    charges.c.status == "captured"
                )
            ).scalar_one()
