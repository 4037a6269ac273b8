"""The orders service: the saga that places an order across inventory and payments, and
the transactional outbox its events leave through."""

import json
import uuid

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

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
            new = conn.execute(
                insert(order_rows)
                .values(id=order_id, customer=customer, status="pending", total_cents=total)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(order_rows.c.id)
            ).first()
            if new is None:  # a retry with the same order_id (the idempotency key)
                return self._again(order_id)
            conn.execute(
                order_items.insert(),
                [{"order_id": order_id, "sku": sku, "qty": qty,
                  "unit_price_cents": found[sku]["price_cents"]} for sku, qty in items.items()],
            )  # fmt: skip
        try:
            self.inventory.reserve(order_id, items)
            self.payments.charge(order_id, total)
            # The suite kills the order service here (SIGKILL): money captured, stock
            # reserved, order pending. recover_pending() must finish such an order.
            self.checkpoint("payment_captured", order_id)
        except (OutOfStock, PaymentFailed) as exc:
            self.compensate(order_id, reason=str(exc))
            return order_id, "cancelled", str(exc)
        if not self._confirm(order_id, customer, total, items):
            # a concurrent compensation cancelled it first: it refunds and releases
            self.compensate(order_id, reason="cancelled while it was being placed")
            return order_id, "cancelled", "cancelled while it was being placed"
        self.checkpoint("order_committed", order_id)
        return order_id, "confirmed", None

    def _again(self, order_id: str):
        """A retried order: its first attempt's result, never a second charge. An order
        still pending was left by an attempt that died (or is still running): cancel it
        (refund, release); a confirmation that comes later finds it cancelled."""
        self.compensate(order_id, reason="retried while pending: cancelled")
        row = self.get(order_id)
        with self.engine.connect() as conn:
            reason = conn.execute(
                select(order_rows.c.reason).where(order_rows.c.id == order_id)
            ).scalar_one()
        return order_id, row["status"], reason

    def _confirm(self, order_id: str, customer: str, total: int, items: dict[str, int]) -> bool:
        """The order's new status and its event row: ONE transaction, both or neither. Only
        a pending order is confirmed: if a compensation cancelled it meanwhile, the UPDATE
        matches no row and no event is written. True if this call confirmed it."""
        event = {"order_id": order_id, "customer": customer, "total_cents": total,
                 "items": items}  # fmt: skip
        with self.engine.begin() as conn:
            claimed = conn.execute(
                order_rows.update()
                .where(order_rows.c.id == order_id, order_rows.c.status == "pending")
                .values(status="confirmed")
                .returning(order_rows.c.id)
            ).first()
            if claimed is None:
                return False
            conn.execute(
                text(
                    "INSERT INTO outbox (event_id, event_type, payload) "
                    "VALUES (:event_id, :event_type, CAST(:payload AS jsonb))"
                ),
                {"event_id": f"confirmed-{order_id}", "event_type": EVENT_CONFIRMED,
                 "payload": json.dumps(event)},
            )  # fmt: skip
        return True

    def compensate(self, order_id: str, reason: str = "compensated") -> bool:
        """Cancel the order, then undo its steps, newest first: refund, release. The order
        is claimed first: only a pending (or already cancelled) order is compensated, so a
        confirmed order keeps its money and its goods. Refund and release are idempotent,
        so running this again (a retry, a restarted orchestrator) changes nothing. True if
        the order is cancelled."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                order_rows.update()
                .where(order_rows.c.id == order_id,
                       order_rows.c.status.in_(["pending", "cancelled"]))
                .values(status="cancelled",
                        reason=func.coalesce(order_rows.c.reason, reason))
                .returning(order_rows.c.id)
            ).first()  # fmt: skip
        if claimed is None:  # confirmed (or unknown): nothing to undo
            return False
        self.payments.refund(order_id)
        self.inventory.release(order_id)
        return True

    def recover(self, older_than_s: float) -> int:
        """Cancel (refund, release) every order still pending after ``older_than_s``
        seconds: its orchestrator died mid-saga. Compensating is always safe here (the
        claim in :meth:`compensate` keeps a confirmation and a cancellation apart); an
        alternative is to confirm the orders whose payment was captured."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(order_rows.c.id).where(
                    order_rows.c.status == "pending",
                    order_rows.c.created_at
                    <= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
                )
            ).scalars().all()  # fmt: skip
        return sum(self.compensate(i, reason="recovered: its order service died") for i in ids)

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
