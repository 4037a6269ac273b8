"""The containers way to run the course: compose.yaml, .env.example, `make lab-containers`.

No container engine runs on this machine, so no container is started here. What is tested:
the compose file's structure (images and versions, ports on 127.0.0.1 only, healthchecks,
named volumes, the same server settings as the embedded PostgreSQL), that every variable it
reads is documented in .env.example with placeholder passwords only, and the Makefile's
recipes (the .env it generates, the URLs it exports, waiting for health before the lab
opens, its message when compose is missing). Against real servers (a throwaway embedded
pair): the healthcheck commands pass on a healthy server and fail otherwise, and the init
script creates pg_stat_statements where the embedded server has it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import yaml

from labkit import config
from labkit.course.services import Services, postgres_bin_dir, redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
INIT_SQL = ROOT / "containers" / "postgres-initdb" / "10-pg-stat-statements.sql"
PLACEHOLDER = "change-me-locally"
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, and $$ for a literal $."""

    def one(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if values.get(name):
            return values[name]
        assert operator != ":?", f"{name} is required: {argument}"
        return argument or ""

    return VARIABLE.sub(one, text).replace("$$", "$")


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


# --------------------------------------------------------------------------- compose.yaml


def test_images_are_postgres_18_and_redis_7():
    """Exactly two services, on the major versions the course is written for, with the
    PostgreSQL major the embedded server runs."""
    services = compose()["services"]
    assert set(services) == {"postgres", "redis"}
    assert services["postgres"]["image"] == "postgres:18"
    assert services["redis"]["image"] == "redis:7"
    with psycopg.connect(config.database_url(), connect_timeout=5) as conn:
        embedded = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    assert embedded == 18, f"the course's own server runs PostgreSQL {embedded}, compose 18"


def test_postgres_preloads_pg_stat_statements_with_the_embedded_settings():
    """pg_stat_statements is preloaded, and every `-c` setting equals what the course's
    embedded server reports (so lessons behave the same on both)."""
    command = compose()["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    settings = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-c")
    assert settings.get("shared_preload_libraries") == "pg_stat_statements"
    with psycopg.connect(config.database_url(), connect_timeout=5) as conn:
        for name, value in settings.items():
            actual = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
            assert actual == value, f"compose sets {name}={value}; the embedded server has {actual}"


def test_ports_are_published_on_loopback_only():
    """Every published port binds 127.0.0.1 (never all interfaces), and no service uses the
    host's network."""
    values = example_values()
    for name, service in compose()["services"].items():
        assert service.get("network_mode") != "host", f"{name} must not use the host network"
        assert service.get("ports"), f"{name} publishes no port"
        for port in service["ports"]:
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = interpolate(str(port), values).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"


def test_every_service_has_a_bounded_healthcheck():
    """Both services have a healthcheck (pg_isready over TCP; a redis-cli PING that must
    answer PONG), with an interval and a retry limit so that `--wait` ends."""
    services = compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check.get("interval") and int(check.get("retries", 0)) > 0, f"{name}: unbounded"
    pg = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in pg and "--host=127.0.0.1" in pg, "postgres must check over TCP"
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"]).lower()


def test_data_lives_in_named_volumes():
    """Server data is in named volumes declared at the top level (PostgreSQL 18 images at
    /var/lib/postgresql); the only bind mount is the read-only init folder."""
    spec = compose()
    declared = set(spec.get("volumes") or {})
    mounts = {}
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            if source.startswith((".", "/")):
                assert mode == ["ro"], f"{name}: bind mount {volume} must be read-only"
                assert (ROOT / source).is_dir(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                mounts[name] = target
    assert mounts == {"postgres": "/var/lib/postgresql", "redis": "/data"}, mounts
    initdb = spec["services"]["postgres"]["volumes"]
    assert "./containers/postgres-initdb:/docker-entrypoint-initdb.d:ro" in initdb


# --------------------------------------------------------------------------- .env.example


def test_every_variable_is_documented_with_placeholder_passwords():
    """Each variable compose.yaml reads is in .env.example with a comment above it; the
    passwords there are placeholders; .env is git-ignored and .env.example committed."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    values = example_values()
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text())}
    assert used, "compose.yaml reads no variable?"
    assert used <= set(values), f"not in .env.example: {sorted(used - set(values))}"
    for key in values:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert index > 0 and lines[index - 1].startswith("#"), f"document {key} in .env.example"
    secrets = {k: v for k, v in values.items() if re.search("PASSWORD|SECRET|TOKEN|KEY", k)}
    assert secrets and all(v == PLACEHOLDER for v in secrets.values()), secrets
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode
    assert ignored == 0, ".env must be git-ignored"
    committed = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".env.example", "compose.yaml", str(INIT_SQL)],
        cwd=ROOT,
        capture_output=True,
    )
    assert committed.returncode == 0, "commit .env.example, compose.yaml and the init script"


# --------------------------------------------------------------------------- Makefile


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env made by the Makefile's own recipe, in a temporary folder."""
    target = tmp_path / ".env"
    proc = make(str(target), f"CONTAINERS_ENV={target}")
    assert proc.returncode == 0, proc.stderr
    return target


def test_make_generates_env_with_fresh_passwords(env_file: Path):
    """The recipe copies .env.example, replaces each placeholder with its own random
    password, makes the file private (600), and never overwrites an existing one."""
    generated = {}
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            generated[key] = value
    example = example_values()
    assert set(generated) == set(example)
    passwords = [generated[k] for k, v in example.items() if v == PLACEHOLDER]
    assert len(passwords) == 2 and len(set(passwords)) == 2, "each password must be its own"
    assert all(re.fullmatch(r"[0-9a-f]{32}", p) for p in passwords), passwords
    assert {k: v for k, v in generated.items() if example[k] != PLACEHOLDER} == {
        k: v for k, v in example.items() if v != PLACEHOLDER
    }
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    before = env_file.read_text()
    again = make(str(env_file), f"CONTAINERS_ENV={env_file}")
    assert again.returncode == 0 and env_file.read_text() == before, "an existing .env was changed"


def test_container_urls_follow_the_embedded_contract(env_file: Path, tmp_path: Path):
    """`make containers-env` exports DATABASE_URL / REDIS_URL in exactly the shape the
    embedded servers use, for the ports and passwords of .env."""
    proc = make("-s", "containers-env", f"CONTAINERS_ENV={env_file}")
    assert proc.returncode == 0, proc.stderr
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in proc.stdout.splitlines()
    )
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    services = Services(tmp_path, quiet=True)  # only its URL formats are used
    assert exported == {
        "DATABASE_URL": services.postgres.url(
            int(values["POSTGRES_PORT"]), values["POSTGRES_PASSWORD"]
        ),
        "REDIS_URL": services.redis.url(int(values["REDIS_PORT"]), values["REDIS_PASSWORD"]),
    }
    published = {
        name: interpolate(service["ports"][0], values).split(":")[1]
        for name, service in compose()["services"].items()
    }
    assert urlsplit(exported["DATABASE_URL"]).port == int(published["postgres"])
    assert urlsplit(exported["REDIS_URL"]).port == int(published["redis"])


def test_lab_containers_waits_for_health_then_opens_the_lab_with_the_urls():
    """`make -n lab-containers`: compose up --wait (health) comes first; JupyterLab starts
    in a shell that exported DATABASE_URL and REDIS_URL, after the course checked them."""
    proc = make("-n", "lab-containers", "CONTAINERS_ENV=.env.example")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    up = next(i for i, line in enumerate(lines) if " up " in line and "--wait" in line)
    assert "--detach" in lines[up] or " -d " in lines[up]
    lab = next(i for i, line in enumerate(lines) if "labkit lab" in line)
    assert up < lab, "the lab must open after the containers are healthy"
    shell = lines[lab]
    assert "export DATABASE_URL=" in shell and "export REDIS_URL=" in shell
    assert shell.index("REDIS_URL=") < shell.index("labkit services up") < shell.index("labkit lab")


def test_containers_up_without_compose_says_what_to_do(env_file: Path):
    """Without a working compose command, `make containers-up` fails with a message that
    names the alternatives (a COMPOSE setting, or plain `make lab`)."""
    proc = make("containers-up", f"CONTAINERS_ENV={env_file}", "COMPOSE=labkit-no-such-compose")
    assert proc.returncode != 0
    assert "make lab" in proc.stderr and "COMPOSE" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- real servers


@pytest.fixture(scope="module")
def throwaway():
    """A private embedded PostgreSQL + Redis pair (never the course's own servers)."""
    saved = {k: os.environ.pop(k, None) for k in ("DATABASE_URL", "REDIS_URL")}
    folder = Path(tempfile.mkdtemp(prefix="labkit-containers-test-"))
    os.chmod(folder, 0o755)
    services = Services(folder, quiet=True)
    services.up()
    urls = config.read_env_file(services.env_file)
    yield urls
    services.down()
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.update({k: v for k, v in saved.items() if v is not None})


def run_healthcheck(service: str, port: int, environment: dict, tmp_path: Path) -> int:
    """Run a service's healthcheck command as the container would, with its tools from the
    wheels and the container port mapped to `port`."""
    test = compose()["services"][service]["healthcheck"]["test"]
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    cli = shim / "redis-cli"
    cli.write_text(f'#!/bin/sh\nexec "{redis_server_binary().parent}/redis-cli" -p {port} "$@"\n')
    cli.chmod(0o755)
    env = {
        "PATH": f"{shim}:{postgres_bin_dir()}:/usr/bin:/bin",
        "PGPORT": str(port),
        **environment,
    }
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.xdist_group("services")
def test_healthchecks_pass_on_healthy_servers_and_fail_otherwise(throwaway, tmp_path):
    """The healthcheck commands, run against real servers: healthy → 0; a wrong Redis
    password or a port with no PostgreSQL → not 0."""
    pg, rd = urlsplit(throwaway["DATABASE_URL"]), urlsplit(throwaway["REDIS_URL"])
    password = unquote(rd.password)
    assert run_healthcheck("postgres", pg.port, {}, tmp_path) == 0
    assert run_healthcheck("redis", rd.port, {"REDISCLI_AUTH": password}, tmp_path) == 0
    assert run_healthcheck("redis", rd.port, {"REDISCLI_AUTH": "wrong"}, tmp_path) != 0
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert run_healthcheck("postgres", closed, {}, tmp_path) != 0


@pytest.mark.xdist_group("services")
def test_init_script_creates_pg_stat_statements_where_the_embedded_server_has_it(throwaway):
    """Run the init script with psql as the image does: pg_stat_statements comes back in
    template1 and postgres after being dropped from both."""
    url = throwaway["DATABASE_URL"]
    base = url.rsplit("/", 1)[0]
    for database in ("template1", "postgres"):
        with psycopg.connect(f"{base}/{database}", autocommit=True) as conn:
            conn.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
    psql = postgres_bin_dir() / "psql"
    parts = urlsplit(url)
    proc = subprocess.run(
        [str(psql), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password",
         "-h", "127.0.0.1", "-p", str(parts.port), "-U", "postgres", "-d", "postgres",
         "-f", str(INIT_SQL)],
        env={**os.environ, "PGPASSWORD": unquote(parts.password)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for database in ("template1", "postgres"):
        with psycopg.connect(f"{base}/{database}") as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
            ).fetchone()
        assert found, f"the init script did not create pg_stat_statements in {database}"
