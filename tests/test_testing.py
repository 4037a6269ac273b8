"""labkit.testing against the course's PostgreSQL: the code under test commits (twice, and
through the ORM) and the next test still finds the table empty; a failing test leaves
nothing either; two parallel rolled-back tests inserting the same key block each other,
and with different keys they do not."""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from labkit import db, testing


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String, unique=True)


@pytest.fixture(scope="module")
def engine():
    database = db.fresh_database("s15_test_testing")
    engine = database.engine()
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
    db.drop_database("s15_test_testing")


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM accounts")).scalar_one()


def open_account(session, owner: str) -> Account:
    """The code under test: it commits, as application code does."""
    account = Account(owner=owner)
    session.add(account)
    session.commit()
    return account


def test_commits_of_the_code_under_test_are_rolled_back(engine):
    with testing.rolled_back(engine) as session:
        open_account(session, "ada")
        open_account(session, "bob")
        assert session.scalars(select(Account.owner).order_by(Account.owner)).all() == [
            "ada",
            "bob",
        ]
        with pytest.raises(Exception, match="unique"):
            open_account(session, "ada")  # a failed commit inside the test ...
        session.rollback()  # ... rolls back to the last savepoint only
        assert session.scalar(select(Account.owner).where(Account.owner == "bob")) == "bob"
    assert count(engine) == 0


def test_a_failing_test_leaves_nothing(engine):
    with pytest.raises(AssertionError), testing.rolled_back(engine) as session:
        open_account(session, "carl")
        raise AssertionError("the test failed")
    assert count(engine) == 0


def test_parallel_tests_meet_at_a_unique_key_and_not_otherwise(engine):
    same = text("INSERT INTO accounts (owner) VALUES ('dana')")
    assert testing.waits_for_another(engine, same) is True
    different = text("INSERT INTO accounts (owner) VALUES ('e-' || pg_backend_pid())")
    assert testing.waits_for_another(engine, different) is False
    assert count(engine) == 0


def test_bad_input_says_what_to_do(engine):
    with pytest.raises(ValueError, match="pass the engine"), testing.rolled_back(engine, bind=1):
        pass
