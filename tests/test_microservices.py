"""labkit.microservices against the course's PostgreSQL and Redis: one database per
service, each migrated by its own Alembic folder; a migration of one service touches no
other; the orders service's read model of user names under replays and duplicates."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from labkit import microservices as ms
from labkit.errors import LabkitError

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture(scope="module")
def databases():
    shop = ms.ServiceDatabases("test_ms")
    shop.create()
    yield shop
    shop.drop()


@pytest.fixture
def shop(databases):
    """The module's databases, emptied (dropping databases costs a checkpoint each)."""
    databases.reset()
    return databases


def tables(shop, service):
    return set(shop.fingerprint(service)["tables"])


def test_each_service_gets_its_own_database_built_by_its_own_migrations(shop):
    assert shop.versions() == dict.fromkeys(ms.SERVICES)  # nothing migrated yet
    shop.migrate_all()
    assert shop.versions() == {
        "users": "users_0001",
        "inventory": "inventory_0001",
        "payments": "payments_0001",
        "orders": "orders_0002",
    }
    for service in ms.SERVICES:
        assert tables(shop, service) == set(ms.METADATA[service].tables) | {"alembic_version"}
        assert shop.schema_drift(service) == [], f"{service}: migrations and metadata differ"
    names = [shop.database(s).name for s in ms.SERVICES]
    assert len(set(names)) == 4
    assert all(name.endswith(f"test_ms_{s}") for name, s in zip(names, ms.SERVICES, strict=True))


def test_migrating_one_service_touches_no_other(shop):
    for service in ("users", "inventory", "payments"):
        shop.migrate(service)
    shop.migrate("orders", "orders_0001")
    before = shop.fingerprints()
    assert "user_names" not in before["orders"]["tables"]
    shop.migrate("orders")
    after = shop.fingerprints()
    assert shop.changed_since(before) == ["orders"]
    for service in ("users", "inventory", "payments"):
        assert after[service] == before[service]
    assert after["orders"]["alembic_version"] == "orders_0002"
    assert {"user_names", "stream_positions"} <= set(after["orders"]["tables"])
    shop.downgrade("orders", "base")
    assert tables(shop, "orders") == {"alembic_version"}
    assert shop.changed_since(after) == ["orders"]
    assert shop.versions()["users"] == "users_0001"


def test_create_is_idempotent_and_keeps_data_unless_fresh(shop):
    shop.migrate("users")
    with shop.engine("users").begin() as conn:
        conn.execute(ms.users.insert().values(name="Ann"))
    shop.create()  # again: nothing dropped
    with shop.engine("users").connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 1
    shop.reset()
    assert shop.versions()["users"] is None
    shop.migrate("users")
    shop.create(fresh=True)  # dropped and created again
    assert shop.versions()["users"] is None


def test_bad_names_get_clear_errors():
    with pytest.raises(ValueError, match="lower-case letters"):
        ms.ServiceDatabases("Bad-Prefix")
    with pytest.raises(ValueError, match="unknown service 'billing'"):
        ms.ServiceDatabases("test_ms").name("billing")


def test_read_model_is_right_under_replays_duplicates_and_late_events(shop):
    shop.migrate_all()
    bus = ms.UserEvents(shop)
    ids = [bus.register(f"user {n}") for n in range(6)]
    for user_id in ids[:3]:
        bus.rename(user_id, f"renamed {user_id}")
    model = ms.UserNames(shop)
    assert model.catch_up() == 9 and model.changed == 9
    assert model.wrong_rows() == 0 and model.names() == model.source_of_truth()
    rows = model.rows()
    assert model.catch_up() == 0  # the position was saved with the rows
    assert model.replay() == 9 and model.rows() == rows
    # Every event delivered once more, in order, then the first registration late again.
    events = bus.events()
    for _, event in events:
        bus.publish(event["type"], event["user_id"], event["name"], event["version"])
    bus.publish("user_registered", ids[0], "user 0", 1)
    assert model.catch_up() == 10
    assert model.rows() == rows and model.wrong_rows() == 0
    assert model.changed == 9  # the replay, the duplicates and the late event changed nothing
    # The same stream applied without the version guard: the late event wins.
    naive = ms.UserNames(shop, naive=True)
    naive.reset()
    assert naive.catch_up() == 19 and naive.changed == 19
    assert naive.wrong_rows() == 1
    assert naive.names()[ids[0]] == "user 0"


def test_rename_of_unknown_user_says_what_to_do(shop):
    shop.migrate("users")
    with pytest.raises(ValueError, match="register it first"):
        ms.UserEvents(shop).rename(12345, "nobody")


def test_env_py_also_runs_from_a_url_as_the_alembic_command_line_does(shop):
    """Without a connection handed over, env.py migrates on ``sqlalchemy.url`` (what
    ``alembic -c alembic.ini upgrade head`` would give it); without either, it says what to do."""
    from alembic import command

    config = shop.alembic_config("payments")
    config.set_main_option(
        "sqlalchemy.url", shop.database("payments").sqlalchemy_url.replace("%", "%%")
    )
    command.upgrade(config, "head")
    assert shop.versions()["payments"] == "payments_0001"
    assert shop.versions()["users"] is None
    with pytest.raises(LabkitError, match="ServiceDatabases"):
        command.upgrade(shop.alembic_config("users"), "head")
