"""labkit.saga against the course's PostgreSQL: a failure injected at every step leaves a
consistent state (compensations in reverse order); an orchestrator process SIGKILLed at
every action resumes when started again and finishes consistently."""

from __future__ import annotations

import pytest

from labkit import microservices as ms
from labkit import saga
from labkit.supervisor import Supervisor

pytestmark = pytest.mark.xdist_group("services")

STOCK = {"book": 10}


@pytest.fixture(scope="module")
def databases():
    shop = ms.ServiceDatabases("test_saga")
    shop.create()
    yield shop
    shop.drop()


@pytest.fixture
def shop(databases):
    databases.reset()
    databases.migrate_all()
    saga.Inventory(databases).set_stock(STOCK)
    return databases


def place(shop, order_id, qty=2):
    return saga.place_order(shop, order_id, user_id=7, sku="book", qty=qty, amount_cents=1000)


# fail_at → (saga status, steps done, compensations run in order, order status,
#            stock, captured charges, refunded charges)
EXPECTED = {
    None: ("completed", ["reserve", "charge", "confirm"], [], "confirmed", 8, 1, 0),
    "reserve": ("compensated", [], [], "cancelled", 10, 0, 0),
    "charge": ("compensated", ["reserve"], ["release"], "cancelled", 10, 0, 0),
    "confirm": ("compensated", ["reserve", "charge"], ["refund", "release"], "cancelled", 10, 0, 1),
}


@pytest.mark.parametrize("fail_at", list(EXPECTED), ids=lambda f: f"fail-at-{f}")
def test_a_failure_at_every_step_is_compensated_in_reverse_order(shop, fail_at):
    place(shop, "o1")
    orchestrator = saga.Orchestrator(shop, fail_at=fail_at)
    final = orchestrator.run("o1")
    status, done, compensated, order, stock, captured, refunded = EXPECTED[fail_at]
    assert (final.status, final.done, final.compensated) == (status, done, compensated)
    assert [action for _, action in orchestrator.actions_run] == done + compensated
    report = saga.consistency(shop, STOCK)
    assert report.violations == []
    assert (report.orders, report.stock["book"]) == ({order: 1}, stock)
    assert (report.captured, report.refunded) == (captured, refunded)
    assert (final.error is None) == (fail_at is None)


def test_out_of_stock_is_a_failed_step_that_leaves_nothing_behind(shop):
    place(shop, "big", qty=11)
    final = saga.Orchestrator(shop).run("big")
    assert final.status == "compensated" and "out of stock" in final.error
    report = saga.consistency(shop, STOCK)
    assert (report.stock, report.captured, report.violations) == ({"book": 10}, 0, [])


def test_running_a_finished_saga_again_does_nothing(shop):
    place(shop, "o1")
    saga.Orchestrator(shop).run("o1")
    place(shop, "o1")  # placing it again changes nothing either
    again = saga.Orchestrator(shop)
    assert again.run("o1").status == "completed" and again.actions_run == []
    assert saga.consistency(shop, STOCK).stock == {"book": 8}


def test_every_step_is_idempotent(shop):
    place(shop, "o1")
    inventory, payments = saga.Inventory(shop), saga.Payments(shop)
    for _ in range(2):
        inventory.reserve("o1", "book", 2)
        payments.charge("o1", 7, 1000)
    assert saga.consistency(shop, STOCK).stock == {"book": 8}
    assert (payments.refund("o1"), payments.refund("o1")) == (True, False)
    assert (inventory.release("o1"), inventory.release("o1")) == (True, False)
    assert saga.consistency(shop, STOCK).stock == {"book": 10}


# Kill point (the action whose effect is committed, not yet recorded), the failure the
# killed orchestrator was told to inject, what it had recorded, and how the saga ends.
KILL_POINTS = [
    ("reserve", None, "running", [], "completed"),
    ("charge", None, "running", ["reserve"], "completed"),
    ("confirm", None, "running", ["reserve", "charge"], "completed"),
    ("refund", "confirm", "compensating", ["reserve", "charge"], "compensated"),
    ("release", "charge", "compensating", ["reserve"], "compensated"),
]


def test_an_orchestrator_killed_at_every_point_resumes_and_ends_consistent(shop, tmp_path):
    ids = [f"kill-after-{action}" for action, *_ in KILL_POINTS]
    with Supervisor(say=lambda message: None) as supervisor:
        for order_id, (action, fail_at, status, recorded, _) in zip(ids, KILL_POINTS, strict=True):
            place(shop, order_id, qty=1)
            worker = saga.OrchestratorProcess(
                shop, tmp_path / order_id, saga_id=order_id, fail_at=fail_at,
                pause_after=action, name=order_id,
            )  # fmt: skip
            supervisor.up(worker)  # returns once it is paused right after `action`
            # It holds the saga: another orchestrator keeps off it meanwhile.
            assert saga.Orchestrator(shop).run(order_id) is None
            saga.kill(worker)
            supervisor.down(worker)
            mid = saga.state(shop, order_id)
            assert (mid.status, mid.done) == (status, recorded), order_id
        # Half-done sagas, for now. After confirm every effect is in place, after release
        # every effect is undone: only the saga's record lags, no invariant is broken.
        waiting = saga.consistency(shop, STOCK).violations
        broken = {i: sum(v.startswith(f"{i}: ") for v in waiting) for i in ids}
        assert sum(broken.values()) == len(waiting), waiting
        assert list(broken.values()) == [1, 2, 0, 1, 0], waiting
        resumed = saga.OrchestratorProcess(shop, tmp_path / "resumed")
        supervisor.up(resumed)
        states = saga.wait_until_finished(shop, ids, timeout=30)
        supervisor.down(resumed)
    for order_id, (*_, final) in zip(ids, KILL_POINTS, strict=True):
        assert states[order_id].status == final, order_id
    report = saga.consistency(shop, STOCK)
    assert report.violations == []
    assert report.orders == {"confirmed": 3, "cancelled": 2}
    assert (report.stock, report.captured, report.refunded) == ({"book": 7}, 3, 1)


def test_bad_arguments_say_what_to_choose(shop):
    with pytest.raises(ValueError, match="fail_at must be one of"):
        saga.Orchestrator(shop, fail_at="ship")
    with pytest.raises(ValueError, match="pause_after must be one of"):
        saga.Orchestrator(shop, pause_after="ship")
    with pytest.raises(ValueError, match="place the order first"):
        saga.state(shop, "nope")
    with pytest.raises(ValueError, match="qty > 0"):
        place(shop, "zero", qty=0)
