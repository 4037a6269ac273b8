"""An orchestrated saga that places an order across three services, each with its own
database (:mod:`labkit.microservices`): reserve the stock (inventory) → charge the payment
(payments) → confirm the order (orders). A step that fails makes the orchestrator run the
compensations of the steps done, newest first (refund, then release); the order ends
cancelled, the stock restored, and no charge is left without a confirmed order.

>>> from labkit import microservices as ms, saga
>>> shop = ms.ServiceDatabases("doctest_saga")
>>> _ = shop.create(fresh=True); shop.migrate_all()
>>> saga.Inventory(shop).set_stock({"book": 5})
>>> saga.place_order(shop, "ok", user_id=1, sku="book", qty=2, amount_cents=3000)
'ok'
>>> saga.Orchestrator(shop).run("ok").status
'completed'
>>> saga.place_order(shop, "declined", user_id=1, sku="book", qty=1, amount_cents=1500)
'declined'
>>> state = saga.Orchestrator(shop, fail_at="charge").run("declined")
>>> state.status, state.done, state.compensated
('compensated', ['reserve'], ['release'])
>>> report = saga.consistency(shop, {"book": 5})
>>> report.stock, report.captured, report.orders, report.violations
({'book': 3}, 1, {'confirmed': 1, 'cancelled': 1}, [])
>>> shop.drop()

The saga's state (its status, the steps done and the compensations run) lives in the
orders database and every step is idempotent (keyed by the saga's id), so an orchestrator
killed at any point — :class:`OrchestratorProcess` runs one as a real process through the
supervisor — is simply started again and finishes every unfinished saga consistently.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, text

from labkit.discovery import kill
from labkit.errors import LabkitError
from labkit.microservices import (
    ServiceDatabases,
    charges,
    orders,
    products,
    reservations,
    sagas,
)
from labkit.supervisor import ProcessServer

__all__ = [
    "ACTIONS",
    "COMPENSATIONS",
    "STEPS",
    "Consistency",
    "Inventory",
    "Orchestrator",
    "OrchestratorProcess",
    "Orders",
    "Payments",
    "SagaState",
    "StepFailed",
    "consistency",
    "kill",
    "place_order",
    "state",
    "wait_until_finished",
]

#: The saga's steps, in order.
STEPS = ("reserve", "charge", "confirm")
#: What undoes each step (confirming is the last step: nothing after it can fail).
COMPENSATIONS = {"reserve": "release", "charge": "refund"}
#: Every action an orchestrator performs: a kill point may follow any of them.
ACTIONS = ("reserve", "charge", "confirm", "refund", "release")
FINAL = ("completed", "compensated")


class StepFailed(LabkitError):
    """A service refused a step (out of stock, payment declined, ...): compensate."""


# --------------------------------------------------------------------------- the services
# Each call is one local transaction on the service's own database, and keyed by the saga's
# id: calling it twice (an orchestrator that resumes after a crash) has the effect of once.


class Inventory:
    """The inventory service. ``fail=True`` makes it refuse every reservation."""

    def __init__(self, shop: ServiceDatabases, *, fail: bool = False) -> None:
        self.engine = shop.engine("inventory")
        self.fail = fail

    def set_stock(self, stock: dict[str, int]) -> None:
        """Set each product's stock (creating the product if needed)."""
        from sqlalchemy.dialects.postgresql import insert

        with self.engine.begin() as conn:
            for sku, count in stock.items():
                statement = insert(products).values(sku=sku, stock=count)
                conn.execute(
                    statement.on_conflict_do_update(index_elements=["sku"], set_={"stock": count})
                )

    def reserve(self, saga_id: str, sku: str, qty: int) -> None:
        if self.fail:
            raise StepFailed("inventory refused the reservation (told to fail)")
        with self.engine.begin() as conn:
            done = conn.execute(
                select(reservations.c.saga_id).where(reservations.c.saga_id == saga_id)
            ).first()
            if done:
                return  # already reserved by an earlier attempt
            left = conn.execute(
                products.update()
                .where(products.c.sku == sku, products.c.stock >= qty)
                .values(stock=products.c.stock - qty)
                .returning(products.c.stock)
            ).first()
            if left is None:
                raise StepFailed(f"out of stock: fewer than {qty} of {sku!r} left")
            conn.execute(
                reservations.insert().values(saga_id=saga_id, sku=sku, qty=qty, status="reserved")
            )

    def release(self, saga_id: str) -> bool:
        """Give the reserved stock back; True if this call did it (False: nothing to undo)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                reservations.update()
                .where(reservations.c.saga_id == saga_id, reservations.c.status == "reserved")
                .values(status="released")
                .returning(reservations.c.sku, reservations.c.qty)
            ).first()
            if row is None:
                return False
            conn.execute(
                products.update()
                .where(products.c.sku == row.sku)
                .values(stock=products.c.stock + row.qty)
            )
            return True


class Payments:
    """The payment service. ``fail=True`` makes it decline every charge."""

    def __init__(self, shop: ServiceDatabases, *, fail: bool = False) -> None:
        self.engine = shop.engine("payments")
        self.fail = fail

    def charge(self, saga_id: str, user_id: int, amount_cents: int) -> None:
        if self.fail:
            raise StepFailed("payment declined (the payment service was told to fail)")
        from sqlalchemy.dialects.postgresql import insert

        with self.engine.begin() as conn:
            statement = insert(charges).values(
                saga_id=saga_id, user_id=user_id, amount_cents=amount_cents, status="captured"
            )
            conn.execute(statement.on_conflict_do_nothing(index_elements=["saga_id"]))

    def refund(self, saga_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                charges.update()
                .where(charges.c.saga_id == saga_id, charges.c.status == "captured")
                .values(status="refunded")
            )
            return result.rowcount == 1


class Orders:
    """The orders service. ``fail=True`` makes it refuse to confirm."""

    def __init__(self, shop: ServiceDatabases, *, fail: bool = False) -> None:
        self.engine = shop.engine("orders")
        self.fail = fail

    def confirm(self, saga_id: str) -> None:
        if self.fail:
            raise StepFailed("the orders service refused to confirm (told to fail)")
        with self.engine.begin() as conn:
            conn.execute(
                orders.update()
                .where(orders.c.id == saga_id, orders.c.status == "pending")
                .values(status="confirmed")
            )

    def cancel(self, saga_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                orders.update()
                .where(orders.c.id == saga_id, orders.c.status == "pending")
                .values(status="cancelled")
            )


def place_order(
    shop: ServiceDatabases, order_id: str, *, user_id: int, sku: str, qty: int, amount_cents: int
) -> str:
    """Write a pending order and its saga (status ``running``) in one transaction of the
    orders database; an orchestrator then carries it out. Placing it again changes nothing."""
    from sqlalchemy.dialects.postgresql import insert

    if qty <= 0 or amount_cents < 0:
        raise ValueError(
            f"an order needs qty > 0 and amount_cents >= 0 (got {qty}, {amount_cents})"
        )
    with shop.engine("orders").begin() as conn:
        created = conn.execute(
            insert(orders)
            .values(
                id=order_id,
                user_id=user_id,
                sku=sku,
                qty=qty,
                amount_cents=amount_cents,
                status="pending",
            )  # fmt: skip
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(orders.c.id)
        ).first()
        if created is not None:
            conn.execute(sagas.insert().values(id=order_id, status="running"))
    return order_id


# --------------------------------------------------------------------------- the orchestrator


@dataclass
class SagaState:
    """A saga's persisted state (a row of ``sagas`` in the orders database)."""

    id: str
    status: str
    done: list[str]
    compensated: list[str]
    error: str | None


def state(shop: ServiceDatabases, saga_id: str) -> SagaState:
    with shop.engine("orders").connect() as conn:
        row = conn.execute(sagas.select().where(sagas.c.id == saga_id)).first()
    if row is None:
        raise ValueError(f"no saga {saga_id!r}: place the order first (saga.place_order)")
    return SagaState(row.id, row.status, list(row.done), list(row.compensated), row.error)


class Orchestrator:
    """Carries sagas to the end, persisting each step before the next.

    ``fail_at`` (a step) tells that step's service to fail; ``pause_after`` (an action)
    calls ``on_pause(action, saga_id)`` right after that action's effect is committed and
    before the saga records it — the worst moment for a crash, which is where an
    :class:`OrchestratorProcess` stops to be killed."""

    def __init__(
        self,
        shop: ServiceDatabases,
        *,
        fail_at: str | None = None,
        pause_after: str | None = None,
        on_pause: Callable[[str, str], None] | None = None,
    ) -> None:
        if fail_at is not None and fail_at not in STEPS:
            raise ValueError(f"fail_at must be one of {STEPS} or None, not {fail_at!r}")
        if pause_after is not None and pause_after not in ACTIONS:
            raise ValueError(f"pause_after must be one of {ACTIONS} or None, not {pause_after!r}")
        self.shop = shop
        self.inventory = Inventory(shop, fail=fail_at == "reserve")
        self.payments = Payments(shop, fail=fail_at == "charge")
        self.orders = Orders(shop, fail=fail_at == "confirm")
        self.pause_after = pause_after
        self.on_pause = on_pause
        self.actions_run: list[tuple[str, str]] = []

    def _order(self, saga_id: str):
        with self.shop.engine("orders").connect() as conn:
            return conn.execute(orders.select().where(orders.c.id == saga_id)).one()

    def _record(self, saga_id: str, **values) -> None:
        with self.shop.engine("orders").begin() as conn:
            conn.execute(
                sagas.update().where(sagas.c.id == saga_id).values(updated_at=func.now(), **values)
            )

    def _act(self, action: str, order) -> None:
        if action == "reserve":
            self.inventory.reserve(order.id, order.sku, order.qty)
        elif action == "charge":
            self.payments.charge(order.id, order.user_id, order.amount_cents)
        elif action == "confirm":
            self.orders.confirm(order.id)
        elif action == "refund":
            self.payments.refund(order.id)
        elif action == "release":
            self.inventory.release(order.id)
        self.actions_run.append((order.id, action))
        if action == self.pause_after and self.on_pause is not None:
            self.on_pause(action, order.id)

    def run(self, saga_id: str) -> SagaState | None:
        """Carry ``saga_id`` on from its persisted state to the end; None if another
        orchestrator holds it right now (a session advisory lock: freed if that one dies)."""
        engine = self.shop.engine("orders")
        with engine.connect() as lock:
            key = "saga:" + saga_id
            if not lock.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}
            ).scalar():
                return None
            try:
                lock.commit()
                self._advance(saga_id)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
                lock.commit()
        return state(self.shop, saga_id)

    def _advance(self, saga_id: str) -> None:
        current = state(self.shop, saga_id)
        order = self._order(saga_id)
        if current.status == "running":
            done = list(current.done)
            for step in STEPS:
                if step in done:
                    continue
                try:
                    self._act(step, order)
                except StepFailed as exc:
                    self._record(saga_id, status="compensating", error=str(exc))
                    current = state(self.shop, saga_id)
                    break
                done.append(step)
                self._record(saga_id, done=done)
            else:
                self._record(saga_id, status="completed")
                return
        if current.status == "compensating":
            compensated = list(current.compensated)
            for step in reversed(current.done):
                action = COMPENSATIONS.get(step)
                if action is None or action in compensated:
                    continue
                self._act(action, order)
                compensated.append(action)
                self._record(saga_id, compensated=compensated)
            self.orders.cancel(saga_id)
            self._record(saga_id, status="compensated")

    def unfinished(self) -> list[str]:
        """The sagas not yet completed or compensated, oldest first."""
        with self.shop.engine("orders").connect() as conn:
            rows = conn.execute(
                select(sagas.c.id)
                .where(sagas.c.status.not_in(FINAL))
                .order_by(sagas.c.updated_at, sagas.c.id)
            ).all()
        return [row.id for row in rows]

    def run_all(self) -> int:
        """One pass over the unfinished sagas; returns how many it carried on."""
        carried = 0
        for saga_id in self.unfinished():
            if self.run(saga_id) is not None:
                carried += 1
        return carried


def wait_until_finished(shop: ServiceDatabases, saga_ids: list[str], timeout: float = 20) -> dict[str, SagaState]:  # fmt: skip
    """Poll until every saga in ``saga_ids`` is completed or compensated."""
    deadline = time.monotonic() + timeout
    while True:
        states = {saga_id: state(shop, saga_id) for saga_id in saga_ids}
        if all(s.status in FINAL for s in states.values()):
            return states
        if time.monotonic() > deadline:
            waiting = {k: v.status for k, v in states.items() if v.status not in FINAL}
            raise TimeoutError(
                f"sagas still unfinished after {timeout} s: {waiting}. Is an orchestrator "
                "running (OrchestratorProcess)? Its log says why it stopped."
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------- consistency


@dataclass
class Consistency:
    """The cross-service state after the sagas, and every broken invariant found."""

    stock: dict[str, int]
    captured: int
    refunded: int
    orders: dict[str, int]
    sagas: dict[str, int]
    violations: list[str] = field(default_factory=list)


def consistency(shop: ServiceDatabases, initial_stock: dict[str, int]) -> Consistency:
    """Read the three services' databases and check the saga's invariants: the stock plus
    what confirmed orders hold equals the initial stock; a captured charge exists exactly
    for each confirmed order; no order is pending once its saga is finished."""
    with shop.engine("inventory").connect() as conn:
        stock = dict(conn.execute(select(products.c.sku, products.c.stock)).all())
        held = conn.execute(
            select(reservations.c.saga_id, reservations.c.sku, reservations.c.qty).where(
                reservations.c.status == "reserved"
            )
        ).all()
    with shop.engine("payments").connect() as conn:
        charge_rows = conn.execute(select(charges.c.saga_id, charges.c.status)).all()
    with shop.engine("orders").connect() as conn:
        order_rows = dict(conn.execute(select(orders.c.id, orders.c.status)).all())
        saga_rows = dict(conn.execute(select(sagas.c.id, sagas.c.status)).all())
    captured = {saga_id for saga_id, status in charge_rows if status == "captured"}
    confirmed = {order_id for order_id, status in order_rows.items() if status == "confirmed"}
    reserved = {row.saga_id for row in held}
    problems = []
    for sku, initial in initial_stock.items():
        holding = sum(row.qty for row in held if row.sku == sku)
        if stock.get(sku, 0) + holding != initial:
            problems.append(
                f"{sku}: stock {stock.get(sku, 0)} + reserved {holding} != initial {initial}"
            )
    problems += [f"{o}: charged without a confirmed order" for o in sorted(captured - confirmed)]
    problems += [f"{o}: confirmed without a charge" for o in sorted(confirmed - captured)]
    problems += [f"{o}: stock held without a confirmed order" for o in sorted(reserved - confirmed)]
    problems += [f"{o}: confirmed without stock held" for o in sorted(confirmed - reserved)]
    problems += [
        f"{o}: still pending after its saga ended"
        for o, status in sorted(order_rows.items())
        if status == "pending" and saga_rows.get(o) in FINAL
    ]
    return Consistency(
        stock=stock,
        captured=len(captured),
        refunded=sum(1 for _, status in charge_rows if status == "refunded"),
        orders=dict(Counter(order_rows.values())),
        sagas=dict(Counter(saga_rows.values())),
        violations=problems,
    )


# --------------------------------------------------------------------------- as a process


class OrchestratorProcess(ProcessServer):
    """An orchestrator as a real background process, started with ``Supervisor.up``.

    Without ``pause_after`` it loops over the unfinished sagas (all, or only ``saga_id``) and
    is ready once it has started; with ``pause_after`` it stops right after that action's
    effect is committed, and is ready once it is paused there — the deterministic point at
    which a lesson SIGKILLs it (:func:`kill`)."""

    def __init__(
        self,
        shop: ServiceDatabases,
        home: Path | str,
        *,
        saga_id: str | None = None,
        fail_at: str | None = None,
        pause_after: str | None = None,
        name: str = "orchestrator",
    ) -> None:
        argv = [sys.executable, "-m", "labkit.saga", "--prefix", shop.prefix]
        if saga_id:
            argv += ["--saga", saga_id]
        if fail_at:
            argv += ["--fail-at", fail_at]
        if pause_after:
            argv += ["--pause-after", pause_after]
        super().__init__(
            home,
            lambda port: argv,
            name=name,
            ready_text=f"paused after {pause_after}" if pause_after else "orchestrator ready",
            needs_port=False,
            env={"PYTHONUNBUFFERED": "1"},
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m labkit.saga --prefix P``: an orchestrator worker (see OrchestratorProcess)."""
    parser = argparse.ArgumentParser(prog="python -m labkit.saga", description=main.__doc__)
    parser.add_argument("--prefix", required=True, help="the shop's ServiceDatabases prefix")
    parser.add_argument("--saga", help="carry on only this saga")
    parser.add_argument("--fail-at", choices=STEPS)
    parser.add_argument("--pause-after", choices=ACTIONS)
    args = parser.parse_args(argv)

    def pause(action: str, saga_id: str) -> None:
        print(f"paused after {action} of saga {saga_id} (pid {os.getpid()})", flush=True)
        while True:  # until killed
            time.sleep(60)

    shop = ServiceDatabases(args.prefix)
    orchestrator = Orchestrator(
        shop, fail_at=args.fail_at, pause_after=args.pause_after, on_pause=pause
    )
    if not args.pause_after:
        print(f"orchestrator ready (pid {os.getpid()})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            for saga_id in [args.saga] if args.saga else orchestrator.unfinished():
                if state(shop, saga_id).status not in FINAL:
                    orchestrator.run(saga_id)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
