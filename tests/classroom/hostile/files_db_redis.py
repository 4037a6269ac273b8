"""Task 1's answer: read and write what belongs to the grader; reach PostgreSQL and Redis
beyond the sandbox."""

import os

import psycopg
import redis
from psycopg import sql

from labkit import db


def read(path, size=200):
    with open(path, "rb") as handle:
        return handle.read(size)


def append(path):
    with open(path, "ab") as handle:
        return handle.write(b"pwned")


attempt("read_other_submission", lambda: read(TARGETS["other_submission"]))  # noqa: F821
attempt("list_submitted", lambda: os.listdir(TARGETS["submitted"]))  # noqa: F821
attempt("read_archive", lambda: os.listdir(TARGETS["archive"]))  # noqa: F821
attempt("read_gradebook", lambda: read(TARGETS["gradebook"]))  # noqa: F821
attempt("write_gradebook", lambda: append(TARGETS["gradebook"]))  # noqa: F821
attempt("read_hidden_tests", lambda: read(TARGETS["source"]))  # noqa: F821
attempt("read_services_env", lambda: read(TARGETS["services_env"]))  # noqa: F821


def on_maintenance(statement):
    def run():
        with db.connect(autocommit=True) as conn:
            return conn.execute(statement).statusmessage

    return run


attempt(  # noqa: F821
    "copy_to_program",
    on_maintenance(
        sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(
            sql.Literal(f"touch {TARGETS['sentinel']}")  # noqa: F821
        )
    ),
)
attempt("grant_execute_program", on_maintenance("GRANT pg_execute_server_program TO CURRENT_USER"))  # noqa: F821
attempt("become_superuser", on_maintenance("ALTER ROLE CURRENT_USER SUPERUSER"))  # noqa: F821
attempt("create_role", on_maintenance("CREATE ROLE hostile_extra LOGIN PASSWORD 'x'"))  # noqa: F821


def connect_to(name):
    def run():
        url = db.admin_url().rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute("SELECT current_database()").fetchone()

    return run


def drop(name):
    return on_maintenance(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


for name in TARGETS["bystanders"]:  # noqa: F821
    attempt(f"connect:{name}", connect_to(name))  # noqa: F821
    attempt(f"drop:{name}", drop(name))  # noqa: F821
with db.connect(autocommit=True) as conn:  # every other database it can see in the catalog
    others = [
        row[0]
        for row in conn.execute(
            "SELECT datname FROM pg_database WHERE NOT starts_with(datname, %s) "
            "AND datname NOT IN ('postgres', 'template0')",
            (os.environ["LABKIT_DB_PREFIX"],),
        )
    ]
for name in others:
    attempt(f"connect:{name}", connect_to(name))  # noqa: F821
    attempt(f"drop:{name}", drop(name))  # noqa: F821


def redis_writes_where_it_should_not():
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.config_set("dir", TARGETS["course"])  # noqa: F821
    client.config_set("dbfilename", "pwned.rdb")
    return client.save()


def shared_redis_without_password():
    client = redis.Redis(host="127.0.0.1", port=TARGETS["shared_redis_port"])  # noqa: F821
    return client.keys("*")


attempt("redis_config_set_dir", redis_writes_where_it_should_not)  # noqa: F821
attempt("shared_redis", shared_redis_without_password)  # noqa: F821
results["role"] = {"failed": True, "outcome": os.environ["LABKIT_DB_PREFIX"].rstrip("_")}  # noqa: F821
results["uid"] = {"failed": os.getuid() != 0, "outcome": str(os.getuid())}  # noqa: F821
with open("/proc/self/environ", "rb") as handle:
    results["environ"] = {"failed": True, "outcome": handle.read().decode(errors="replace")}  # noqa: F821
report()  # noqa: F821
