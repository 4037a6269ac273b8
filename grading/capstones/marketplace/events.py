"""Events between the services: the outbox relay (orders → Redis stream) and the shipping
service's consumer, both built on the course's helpers (labkit.outbox, labkit.streams)."""

import psycopg
from sqlalchemy import func, select

from labkit import outbox, streams

from .schema import parcels

GROUP = "shipping"


class _Announcing:
    """An EventBus that calls ``checkpoint("event_published", order_id)`` after each XADD:
    inside the relay's transaction, before the rows are marked sent."""

    def __init__(self, bus: streams.EventBus, checkpoint) -> None:
        self.bus, self.checkpoint = bus, checkpoint

    def publish(self, event_type: str, data: dict, *, event_id: str | None = None):
        sent = self.bus.publish(event_type, data, event_id=event_id)
        self.checkpoint("event_published", data.get("order_id"))
        return sent


def relay_pending(orders_url: str, bus: streams.EventBus, checkpoint) -> int:
    """Publish every unsent outbox row (oldest first), then mark it sent. A relay killed
    between the two publishes the rows again when it restarts: at-least-once."""
    sent = 0
    with psycopg.connect(orders_url, autocommit=True) as conn:
        while batch := outbox.relay_once(conn, _Announcing(bus, checkpoint)):
            sent += batch
    return sent


class Shipping:
    """The shipping service: books one parcel per confirmed order, from the events."""

    def __init__(self, url: str, engine, bus: streams.EventBus) -> None:
        self.url, self.engine, self.bus = url, engine, bus

    def prepare(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            streams.prepare_consumer_database(conn)  # processed_messages: the marks
        self.bus.create_group()

    @staticmethod
    def _book(conn, message: streams.Message) -> None:
        if message.type == "OrderConfirmed":
            conn.execute(
                "INSERT INTO parcels (order_id, customer) VALUES (%s, %s)",
                (message.data["order_id"], message.data["customer"]),
            )

    def consume(self, consumer: str = "shipping-1") -> int:
        """Handle every event waiting in the stream; each at most once (the mark and the
        parcel commit together: labkit.streams.handle_once)."""
        handled = 0
        with psycopg.connect(self.url, autocommit=True) as conn:

            def handle(message: streams.Message) -> None:
                streams.handle_once(conn, GROUP, message, self._book)

            while True:
                done = self.bus.process(consumer, handle, count=100, min_idle_ms=0)
                handled += len(done.handled)
                if not done.handled and not done.failed:
                    return handled

    def parcels(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(parcels.c.order_id, func.count()).group_by(parcels.c.order_id)
            ).all()
        return dict(rows)
