"""The orders service: the saga that places an order across inventory and payments, and
the transactional outbox its events leave through."""

import json
import uuid

from sqlalchemy import select, text

from labkit import outbox

from .inventory import OutOfStock
from .payments import PaymentFailed
from .schema import order_items, order_rows

EVENT_CONFIRMED = "OrderConfirmed"


class Orders:
    def __init__(self, engine, inventory, payments, checkpoint, bus) -> None:
        self.engine = engine
        self.inventory = inventory
        self.payments = payments
        self.checkpoint = checkpoint
        self.bus = bus  # the events' stream: only the relay publishes to it (events.py)

    def create_outbox(self) -> None:
        with self.engine.begin() as conn:
            for ddl in outbox.ORDERS_TABLES[1:]:  # the outbox table and its unsent index
                conn.execute(text(ddl))

    # -- the saga
    def place(self, customer: str, items: dict[str, int], order_id: str | None = None):
        """Pending order (orders) → reserve (inventory) → charge (payments) → confirm, with
        its event, in one transaction (orders). A failed step runs the compensations of the
        steps done: :meth:`compensate`. Returns ``(order_id, status, reason)``."""
        order_id = order_id or uuid.uuid4().hex
        found = self.inventory.products(list(items))
        missing = sorted(set(items) - found.keys())
        if missing:
            raise ValueError(f"unknown products {missing}: add them first")
        total = sum(found[sku]["price_cents"] * qty for sku, qty in items.items())
        with self.engine.begin() as conn:  # the saga's first step: its state is now durable
            conn.execute(
                order_rows.insert().values(
                    id=order_id, customer=customer, status="pending", total_cents=total
                )
            )
            conn.execute(
                order_items.insert(),
                [{"order_id": order_id, "sku": sku, "qty": qty,
                  "unit_price_cents": found[sku]["price_cents"]} for sku, qty in items.items()],
            )  # fmt: skip
        try:
            self.inventory.reserve(order_id, items)
            self.payments.charge(order_id, total)
        except (OutOfStock, PaymentFailed) as exc:
            self.compensate(order_id, reason=str(exc))
            return order_id, "cancelled", str(exc)
        self._confirm(order_id, customer, total, items)
        self.checkpoint("order_committed", order_id)
        return order_id, "confirmed", None

    def _confirm(self, order_id: str, customer: str, total: int, items: dict[str, int]) -> None:
        """The order's new status and its event row: ONE transaction, both or neither."""
        event = {"order_id": order_id, "customer": customer, "total_cents": total,
                 "items": items}  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(
                order_rows.update()
                .where(order_rows.c.id == order_id, order_rows.c.status == "pending")
                .values(status="confirmed")
            )
            conn.execute(
                text(
                    "INSERT INTO outbox (event_id, event_type, payload) "
                    "VALUES (:event_id, :event_type, CAST(:payload AS jsonb))"
                ),
                {"event_id": f"confirmed-{order_id}", "event_type": EVENT_CONFIRMED,
                 "payload": json.dumps(event)},
            )  # fmt: skip

    def compensate(self, order_id: str, reason: str = "compensated") -> None:
        """Undo the steps, newest first: refund, release, cancel. Each is idempotent, so
        running this again (a retry, a restarted orchestrator) changes nothing."""
        self.payments.refund(order_id)
        self.inventory.release(order_id)
        with self.engine.begin() as conn:
            conn.execute(
                order_rows.update()
                .where(order_rows.c.id == order_id, order_rows.c.status == "pending")
                .values(status="cancelled", reason=reason)
            )

    # -- reads
    def get(self, order_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(order_rows).where(order_rows.c.id == order_id)).first()
            if row is None:
                return None
            items = conn.execute(
                select(order_items.c.sku, order_items.c.qty).where(
                    order_items.c.order_id == order_id
                )
            ).all()
        return {"id": row.id, "customer": row.customer, "status": row.status,
                "total_cents": row.total_cents, "items": dict(items)}  # fmt: skip

    def page(self, limit: int, offset: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(order_rows).order_by(order_rows.c.created_at, order_rows.c.id)
                .limit(limit).offset(offset)
            ).all()  # fmt: skip
        return [dict(row._mapping) for row in rows]

    def by_ids(self, ids: list[str]) -> dict[str, dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_rows).where(order_rows.c.id.in_(ids))).all()
        return {row.id: dict(row._mapping) for row in rows}

    def items_of(self, order_ids: list[str]) -> dict[str, list[dict]]:
        """The items of many orders in ONE statement."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(order_items).where(order_items.c.order_id.in_(order_ids))
                .order_by(order_items.c.order_id, order_items.c.sku)
            ).all()  # fmt: skip
        out: dict[str, list[dict]] = {order_id: [] for order_id in order_ids}
        for row in rows:
            out[row.order_id].append(dict(row._mapping))
        return out
