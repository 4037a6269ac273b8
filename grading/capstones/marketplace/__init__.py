"""The marketplace — reference solution (instructors only; never copied to students).

Four services, each with its own database: inventory, payments, orders (the saga and its
outbox) and shipping (a consumer of the orders' events); a GraphQL gateway over orders and
inventory. The acceptance suite: ``python -m labkit check capstone-marketplace DIR``."""

from dataclasses import dataclass

from sqlalchemy import create_engine

from labkit import db, streams

from . import events, gateway
from .inventory import Inventory
from .orders import Orders
from .payments import FAILURES, Payments
from .schema import METADATA

__all__ = ["SERVICES", "Marketplace", "OrderResult"]

SERVICES = ("inventory", "payments", "orders", "shipping")


@dataclass
class OrderResult:
    order_id: str
    status: str  # "confirmed" or "cancelled"
    reason: str | None = None


class Marketplace:
    """``Marketplace(config, checkpoint=None)``: ``config`` holds each service's database URL
    (``config["orders"]``, ...), ``redis_url``, ``stream`` (the events' stream) and
    ``pool_size`` (connections per service database, per process)."""

    def __init__(self, config: dict, *, checkpoint=None) -> None:
        import redis

        self.config = config
        pool = int(config.get("pool_size", 5))
        self.engines = {
            service: create_engine(
                db.sqlalchemy_url(config[service]), pool_size=pool, max_overflow=0, pool_timeout=120
            )  # fmt: skip
            for service in SERVICES
        }
        self.checkpoint = checkpoint or (lambda name, order_id: None)
        self.redis = redis.Redis.from_url(config["redis_url"], decode_responses=True)
        self.bus = streams.EventBus(self.redis, config["stream"], events.GROUP)
        self.inventory = Inventory(self.engines["inventory"])
        self.payments = Payments(self.engines["payments"])
        self.orders = Orders(
            self.engines["orders"], self.inventory, self.payments, self._checkpoint, self.bus
        )
        self.shipping = events.Shipping(config["shipping"], self.engines["shipping"], self.bus)

    def _checkpoint(self, name: str, order_id: str) -> None:
        """``"payment_captured"``: right after the charge, before the order is confirmed;
        ``"order_committed"``: right after the order's confirming commit;
        ``"event_published"``: after each publish, before it is marked sent. The suite
        kills the process at these points."""
        self.checkpoint(name, order_id)

    # -- set-up
    def create_tables(self) -> None:
        """Each service's tables in its own database (idempotent)."""
        for service, metadata in METADATA.items():
            metadata.create_all(self.engines[service])
        self.orders.create_outbox()
        self.shipping.prepare()

    def add_products(self, products: list[dict]) -> None:
        """New products: dicts with ``sku``, ``name``, ``price_cents``, ``stock``."""
        self.inventory.add_products(products)

    # -- orders
    def place_order(self, customer: str, items, order_id: str | None = None) -> OrderResult:
        """Place an order for ``items`` (pairs ``(sku, qty)``) and carry its saga to the end:
        ``confirmed``, or ``cancelled`` with a reason (out of stock, payment failed) and
        every step done undone. Called from many threads and processes at once."""
        wanted: dict[str, int] = {}
        for sku, qty in items:
            wanted[sku] = wanted.get(sku, 0) + qty
        return OrderResult(*self.orders.place(customer, wanted, order_id))

    def compensate(self, order_id: str) -> None:
        """Run ``order_id``'s compensations again (a retry): must change nothing the second
        time."""
        self.orders.compensate(order_id)

    def recover_pending(self, older_than_s: float = 60.0) -> int:
        """Finish the orders a dead order service left ``pending`` for more than
        ``older_than_s`` seconds: each ends confirmed (and its event written) or cancelled
        (refunded, stock released). Run at start-up or from a timer; returns how many."""
        return self.orders.recover(older_than_s)

    def order(self, order_id: str) -> dict | None:
        """``{"id", "customer", "status", "total_cents", "items": {sku: qty}}`` or None."""
        return self.orders.get(order_id)

    def stock(self, sku: str) -> int:
        return self.inventory.stock(sku)

    def set_payment_failure(self, mode: str | None) -> None:
        """Tell the payment service to fail: ``"decline"`` (nothing captured),
        ``"after_capture"`` (money captured, then an error), or ``None`` (work)."""
        if mode not in FAILURES:
            raise ValueError(f"mode must be one of {FAILURES}, not {mode!r}")
        self.payments.fail = mode

    def captured_cents(self) -> int:
        """Money captured and not refunded, in cents."""
        return self.payments.captured_cents()

    # -- events
    def relay_pending(self) -> int:
        """Publish the events waiting to be published; returns how many."""
        return events.relay_pending(self.config["orders"], self.bus, self._checkpoint)

    def consume_events(self) -> int:
        """Let the shipping service handle every event in the stream; returns how many."""
        return self.shipping.consume()

    def shipments(self) -> dict[str, int]:
        """Parcels booked per order id (1 each: an event applied twice shows as 2)."""
        return self.shipping.parcels()

    # -- the gateway
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """Run one GraphQL request on the gateway: ``{"data": ..., "errors": ...}``."""
        return gateway.execute(self, query, variables)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        self.redis.close()
