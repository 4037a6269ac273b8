"""Check the classroom's Zero to JupyterHub values (``classroom/kubernetes/config.yaml``)
without a cluster: what can be proved here, and a list of what cannot.

    python tools/z2jh_check.py                 # check, print what was verified
    python tools/z2jh_check.py --update        # rewrite the resource figures from
                                               # classroom/measured.json, then check

What it proves:

- the YAML parses, with no duplicate key (PyYAML keeps the last one silently; this loader
  refuses);
- the schema file is the one recorded in SCHEMA-PROVENANCE.md (sha256), and config.yaml
  names the chart version recorded there;
- the values validate against the chart's own schema (jsonschema, draft 7). ``required``
  is enforced only for entries the config names itself (extraFiles entries, ...): the
  chart's values.yaml supplies the fixed-name ones, and helm validates the merged values;
- every key path the config sets is *declared* by the schema (a property, or an entry of a
  declared pattern), or is listed apart as free-form: accepted only because the schema
  allows additional properties there (``hub.config``, ``singleuser.extraEnv``, ...) or
  because it sits inside a Kubernetes-native list the schema does not describe;
- the memory figures equal the derivation from classroom/measured.json (RULES below) and
  the CPU figures equal the stated policy;
- the learner's services start in the pod (no DATABASE_URL/REDIS_URL given, state on the
  learner's volume), the exchange volume is the ReadWriteMany claim of exchange.yaml,
  mounted where the injected nbgrader_config.py puts ``Exchange.root``, with the course id
  of grading/nbgrader_config.py, the culler is on, and no secret is in the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "classroom" / "kubernetes"
CONFIG = KIT / "config.yaml"
SCHEMA = KIT / "values.schema.yaml"
PROVENANCE = KIT / "SCHEMA-PROVENANCE.md"
EXCHANGE = KIT / "exchange.yaml"
MEASURED = ROOT / "classroom" / "measured.json"
GRADING_CONFIG = ROOT / "grading" / "nbgrader_config.py"

MIB_STEP = 64
LIMIT_FACTOR = 1.5
INSTRUCTOR_FACTOR = 2
# CPU is a policy, not a derivation (measured.json gives lesson 01's CPU seconds per
# learner, a total, not a rate a guarantee could come from): a tenth of a core
# reserved per learner so that a node packs them by memory, and two cores at most, for
# lesson 04's `pytest -n 2` and the load tests.
CPU_GUARANTEE = 0.1
CPU_LIMIT = 2.0

RULES = (
    f"memory guarantee = idle PSS median per user, rounded up to {MIB_STEP} MiB; "
    f"memory limit = lesson-01 peak PSS max per user x {LIMIT_FACTOR}, rounded up to "
    f"{MIB_STEP} MiB; instructor limit = {INSTRUCTOR_FACTOR} x the learner's limit; "
    f"cpu guarantee = {CPU_GUARANTEE} and limit = {CPU_LIMIT} (policy, not measured)"
)

SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|private_?key|client_?secret|api_?key)", re.IGNORECASE
)
PLACEHOLDER = re.compile(
    r"\b(OWNER|REPO|SHORT_SHA|HUB_DOMAIN|INSTRUCTOR(_EMAIL)?|RWX_STORAGE_CLASS)\b"
)


class CheckError(Exception):
    """The config (or its inputs) fails a check; the message says what to fix."""


# --- YAML -------------------------------------------------------------------------------


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's when there: the schema is 125 kB) that refuses a mapping with
    the same key twice."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise CheckError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                f"{seen[key]}): YAML keeps only the last one, so remove one of them"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(path: Path) -> Any:
    """Parse one YAML document, refusing duplicate keys."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise CheckError(f"{path}: not valid YAML: {exc}") from exc


def load_yaml_all(path: Path) -> list[Any]:
    """Parse every document of a multi-document YAML file, refusing duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
        return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]  # noqa: S506
    except yaml.YAMLError as exc:
        raise CheckError(f"{path}: not valid YAML: {exc}") from exc


# --- the schema and its provenance -----------------------------------------------------


def provenance(note: Path = PROVENANCE) -> dict[str, str]:
    """The ``| field | value |`` rows of SCHEMA-PROVENANCE.md."""
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", note.read_text(encoding="utf-8"), re.M)
    return {key: value for key, value in rows if key not in {"field", "---"}}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chart_version_named(config_path: Path) -> str:
    """The version in config.yaml's ``# Chart: jupyterhub X`` header line."""
    found = re.search(r"^# Chart: jupyterhub (\S+)$", config_path.read_text(encoding="utf-8"), re.M)
    if not found:
        raise CheckError(f"{config_path}: no `# Chart: jupyterhub VERSION` line names the chart")
    return found.group(1)


def _unshared(node: Any) -> Any:
    """A deep copy in which no two places share an object (YAML anchors share them)."""
    return json.loads(json.dumps(node))


def relaxed_schema(schema: dict) -> dict:
    """The schema with ``required`` dropped where the chart's values.yaml supplies the
    value (fixed-name properties), kept under pattern entries the config names itself."""
    schema = _unshared(schema)

    def visit(node: Any, user_named: bool) -> None:
        if not isinstance(node, dict):
            return
        if not user_named:
            node.pop("required", None)
        for child in (node.get("properties") or {}).values():
            visit(child, user_named)
        for child in (node.get("patternProperties") or {}).values():
            visit(child, True)
        for key in ("items", "additionalProperties"):
            visit(node.get(key), user_named)
        for key in ("then", "else"):  # what a value the config sets makes required
            visit(node.get(key), True)
        for key in ("oneOf", "anyOf", "allOf"):
            for child in node.get(key) or []:
                visit(child, user_named)

    visit(schema, False)
    return schema


def schema_errors(config: dict, schema: dict) -> list[str]:
    """jsonschema's errors for the config against the relaxed schema, one line each."""
    import jsonschema

    validator = jsonschema.Draft7Validator(relaxed_schema(schema))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


@dataclass
class KeyReport:
    """Every key path the config sets, sorted by how the schema accepts it."""

    declared: list[str] = field(default_factory=list)
    pattern: list[tuple[str, str]] = field(default_factory=list)  # (path, pattern)
    free_form: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    undeclared: list[str] = field(default_factory=list)


def key_report(config: dict, schema: dict) -> KeyReport:
    """Walk every key path of the config through the schema's declarations."""
    report = KeyReport()

    def walk(value: Any, node: dict, path: str) -> None:
        if isinstance(value, list):
            items = node.get("items") if isinstance(node.get("items"), dict) else None
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    if items and (items.get("properties") or items.get("patternProperties")):
                        walk(item, items, f"{path}[{index}]")
                    else:
                        report.free_form.append(
                            (f"{path}[{index}]", "list item the schema does not describe")
                        )
            return
        if not isinstance(value, dict):
            return
        properties = dict(node.get("properties") or {})
        properties.update((node.get("then") or {}).get("properties") or {})
        patterns = node.get("patternProperties") or {}
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if key in properties:
                report.declared.append(child_path)
                walk(child, properties[key], child_path)
                continue
            matched = next((p for p in patterns if re.search(p, str(key))), None)
            if matched is not None:
                report.pattern.append((child_path, matched))
                walk(child, patterns[matched], child_path)
            elif node.get("additionalProperties", True) is not False:
                report.free_form.append((child_path, f"additionalProperties at {path or '(top)'}"))
            else:
                report.undeclared.append(child_path)

    walk(config, schema, "")
    return report


# --- resources -------------------------------------------------------------------------


def _round_up(mib: float, step: int = MIB_STEP) -> int:
    return int(math.ceil(mib / step) * step)


def read_measured(path: Path = MEASURED) -> dict:
    """classroom/measured.json, checked for the figures the derivation needs."""
    if not path.is_file():
        raise CheckError(
            f"{path} does not exist: run `python tools/hub_bench.py --users 3` to measure, "
            "then `python tools/z2jh_check.py --update`"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        idle = data["pss_mb_per_user"]["idle"]
        peak = data["pss_mb_per_user"]["lesson01_peak"]
        figures = (
            float(idle["median"]),
            float(idle["max"]),
            float(peak["median"]),
            float(peak["max"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(
            f"{path}: pss_mb_per_user.idle / .lesson01_peak with median and max are needed "
            f"({exc!r}); re-run tools/hub_bench.py"
        ) from exc
    if min(figures) <= 0:
        raise CheckError(f"{path}: a memory figure is not positive ({figures}); re-measure")
    if figures[3] < figures[0]:
        raise CheckError(f"{path}: the lesson-01 peak is below the idle median; re-measure")
    return data


def derive_resources(measured: dict) -> dict[str, Any]:
    """The figures config.yaml must hold, from measured.json, by RULES."""
    per_user = measured["pss_mb_per_user"]
    guarantee = _round_up(float(per_user["idle"]["median"]))
    limit = max(_round_up(float(per_user["lesson01_peak"]["max"]) * LIMIT_FACTOR), guarantee)
    return {
        "memory.guarantee": f"{guarantee}M",
        "memory.limit": f"{limit}M",
        "cpu.guarantee": CPU_GUARANTEE,
        "cpu.limit": CPU_LIMIT,
        "instructor.mem_limit": f"{limit * INSTRUCTOR_FACTOR}M",
    }


def _profile(config: dict, slug: str) -> dict:
    for profile in config.get("singleuser", {}).get("profileList") or []:
        if profile.get("slug") == slug:
            return profile
    raise CheckError(f"singleuser.profileList has no profile with slug {slug!r}")


def configured_resources(config: dict) -> dict[str, Any]:
    single = config.get("singleuser", {})
    override = _profile(config, "instructor").get("kubespawner_override", {})
    return {
        "memory.guarantee": (single.get("memory") or {}).get("guarantee"),
        "memory.limit": (single.get("memory") or {}).get("limit"),
        "cpu.guarantee": (single.get("cpu") or {}).get("guarantee"),
        "cpu.limit": (single.get("cpu") or {}).get("limit"),
        "instructor.mem_limit": override.get("mem_limit"),
    }


def resource_mismatches(config: dict, measured: dict) -> list[str]:
    derived = derive_resources(measured)
    found = configured_resources(config)
    return [
        f"{name}: config.yaml has {found[name]!r}, the derivation from measured.json gives "
        f"{derived[name]!r} (run `python tools/z2jh_check.py --update`)"
        for name in derived
        if found[name] != derived[name]
    ]


def update_resources(config_path: Path, measured: dict) -> list[str]:
    """Rewrite the figures on the lines marked ``# z2jh_check: NAME``; returns the changes."""
    derived = derive_resources(measured)
    lines = config_path.read_text(encoding="utf-8").splitlines(keepends=True)
    changed = []
    for number, line in enumerate(lines):
        marker = re.match(r"^(\s*[\w]+: )(\S+)(\s+# z2jh_check: )(\S+)\s*$", line)
        if marker and marker.group(4) in derived:
            value = derived[marker.group(4)]
            new = f"{marker.group(1)}{value}{marker.group(3)}{marker.group(4)}\n"
            if new != line:
                changed.append(f"{marker.group(4)}: {marker.group(2)} -> {value}")
                lines[number] = new
    config_path.write_text("".join(lines), encoding="utf-8")
    return changed


# --- what the class needs --------------------------------------------------------------


def _nbgrader_values(path: Path) -> dict[str, Any]:
    """Load an nbgrader config file with traitlets' loader, the one nbgrader uses."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    return {
        "course_id": config.CourseDirectory.get("course_id"),
        "exchange_root": config.Exchange.get("root"),
    }


def _course_id_in(path: Path) -> str | None:
    """The literal ``c.CourseDirectory.course_id = "..."`` of the course's own nbgrader
    config, read without running it (running it imports nbgrader: seconds)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and any(ast.unparse(t) == "c.CourseDirectory.course_id" for t in node.targets)
        ):
            return node.value.value
    return None


def _injected_values(source: str) -> dict[str, Any]:
    """The values of the nbgrader_config.py that singleuser.extraFiles injects."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="z2jh-nbgrader-") as folder:
        path = Path(folder) / "nbgrader_config.py"
        path.write_text(source, encoding="utf-8")
        return _nbgrader_values(path)


def class_problems(config: dict, exchange_docs: list[dict], grading_config: Path) -> list[str]:
    """The classroom's own requirements, beyond the chart's schema."""
    problems: list[str] = []
    single = config.get("singleuser", {})
    env = single.get("extraEnv") or {}
    home = (single.get("storage") or {}).get("homeMountPath", "/home/jovyan")
    # Per-user services in the pod, their state on the learner's volume.
    if (single.get("storage") or {}).get("type") != "dynamic":
        problems.append("singleuser.storage.type must be `dynamic`: one volume per learner")
    state = str(env.get("LABKIT_STATE_DIR", ""))
    if not state.startswith(home.rstrip("/") + "/"):
        problems.append(f"LABKIT_STATE_DIR ({state or 'unset'}) must be under {home}")
    for profile in single.get("profileList") or []:
        override_env = (profile.get("kubespawner_override") or {}).get("environment")
        # KubeSpawner merges a dict override into extraEnv's values (6.0.0's _load_profile):
        # a profile may add variables, but must not move the servers' state.
        if (override_env or {}).get("LABKIT_STATE_DIR", state) != state:
            problems.append(
                f"profile {profile.get('slug')!r} moves LABKIT_STATE_DIR away from {state}"
            )
        for key in ("DATABASE_URL", "REDIS_URL"):
            if key in (override_env or {}):
                problems.append(
                    f"profile {profile.get('slug')!r} sets {key}: binder/start would not start it"
                )
    for key in ("DATABASE_URL", "REDIS_URL"):
        if key in env:
            problems.append(
                f"singleuser.extraEnv sets {key}: binder/start would not start that service"
            )
    cmd = single.get("cmd", "jupyterhub-singleuser")
    if cmd is None or "jupyterhub-singleuser" not in str(cmd):
        problems.append("singleuser.cmd must run jupyterhub-singleuser (binder/start execs it)")
    if not (single.get("networkPolicy") or {}).get("enabled"):
        problems.append("singleuser.networkPolicy.enabled must be true")
    # The culler.
    cull = config.get("cull") or {}
    if not cull.get("enabled") or not cull.get("timeout"):
        problems.append("cull.enabled must be true with a timeout")
    # The exchange: an RWX claim from exchange.yaml, mounted at Exchange.root in every pod.
    claims = {
        d["metadata"]["name"]: d for d in exchange_docs if d.get("kind") == "PersistentVolumeClaim"
    }
    storage = single.get("storage") or {}
    volumes = {
        v.get("name"): v.get("persistentVolumeClaim", {}).get("claimName")
        for v in storage.get("extraVolumes") or []
    }
    mounts = {m.get("name"): m.get("mountPath") for m in storage.get("extraVolumeMounts") or []}
    exchange_mounts = [
        mounts.get(name) for name, claim in volumes.items() if claim in claims and name in mounts
    ]
    if not exchange_mounts:
        problems.append("no singleuser.storage.extraVolumes entry mounts a claim of exchange.yaml")
    for claim in volumes.values():
        if claim in claims and "ReadWriteMany" not in claims[claim]["spec"].get("accessModes", []):
            problems.append(f"exchange.yaml's claim {claim!r} is not ReadWriteMany")
    for profile in single.get("profileList") or []:
        override = profile.get("kubespawner_override") or {}
        if "volumes" in override or "volume_mounts" in override:
            problems.append(
                f"profile {profile.get('slug')!r} replaces the volumes: the exchange would go"
            )
    injected = [
        entry
        for entry in (single.get("extraFiles") or {}).values()
        if str(entry.get("mountPath", "")).endswith("/nbgrader_config.py")
    ]
    if len(injected) != 1 or not str(injected[0]["mountPath"]).startswith("/etc/jupyter/"):
        problems.append("singleuser.extraFiles needs one /etc/jupyter/nbgrader_config.py")
    else:
        ours = _injected_values(injected[0].get("stringData", ""))
        course = {"course_id": _course_id_in(grading_config)}
        if ours["exchange_root"] not in exchange_mounts:
            problems.append(
                f"Exchange.root {ours['exchange_root']!r} is not where the exchange volume is "
                f"mounted ({exchange_mounts})"
            )
        if ours["course_id"] != course["course_id"]:
            problems.append(
                f"course id {ours['course_id']!r} differs from grading/nbgrader_config.py's "
                f"{course['course_id']!r}"
            )
    # The instructor profile must not be offered to everyone (its image has the solutions).
    extra = "\n".join((config.get("hub", {}).get("extraConfig") or {}).values())
    compile(extra, "hub.extraConfig", "exec")  # a syntax error fails here, not in the hub pod
    if "instructor" not in extra or "profile_list" not in extra:
        problems.append("hub.extraConfig must hide the instructor profile from non-instructors")
    return problems


def secret_findings(node: Any, path: str = "") -> list[str]:
    """Paths whose key looks like a secret and whose value is set, and private keys."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            # A value, not a section (imagePullSecret) or a list of Secret names.
            if SECRET_KEY.search(str(key)) and isinstance(value, str | int | float) and value != "":
                found.append(child)
            found += secret_findings(value, child)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += secret_findings(item, f"{path}[{index}]")
    elif isinstance(node, str) and "PRIVATE KEY-----" in node:
        found.append(path)
    return found


# --- the whole check -------------------------------------------------------------------


@dataclass
class Result:
    lines: list[str] = field(default_factory=list)  # what was verified
    failures: list[str] = field(default_factory=list)
    keys: KeyReport | None = None


def check(
    config_path: Path = CONFIG,
    schema_path: Path = SCHEMA,
    measured_path: Path = MEASURED,
    note: Path = PROVENANCE,
    exchange_path: Path = EXCHANGE,
    grading_config: Path = GRADING_CONFIG,
) -> Result:
    """Run every check; never raises for a failing check, only collects it."""
    result = Result()
    say, fail = result.lines.append, result.failures.append
    try:
        config = load_yaml(config_path)
        schema = load_yaml(schema_path)
        exchange_docs = load_yaml_all(exchange_path)
    except CheckError as exc:
        fail(str(exc))
        return result
    say(
        f"YAML: {config_path.name}, {schema_path.name}, {exchange_path.name} parse, no duplicate key"
    )

    recorded = provenance(note)
    digest = sha256(schema_path)
    if digest != recorded.get("sha256"):
        fail(
            f"{schema_path.name} sha256 {digest} differs from {note.name}'s {recorded.get('sha256')}"
        )
    else:
        say(
            f"schema: sha256 {digest} = {note.name} ({recorded.get('repository')} "
            f"{recorded.get('path')} @ {recorded.get('commit', '')[:8]})"
        )
    try:
        named = chart_version_named(config_path)
    except CheckError as exc:
        fail(str(exc))
        named = None
    if named is not None and named != recorded.get("chart version named in config.yaml"):
        fail(
            f"config.yaml names chart {named}, {note.name} records "
            f"{recorded.get('chart version named in config.yaml')}"
        )
    elif named is not None:
        say(f"chart version: config.yaml names jupyterhub {named}, as {note.name} records")

    errors = schema_errors(config, schema)
    for error in errors:
        fail(f"schema: {error}")
    if not errors:
        say(
            "jsonschema (draft 7): config.yaml is valid against the chart's schema "
            "(`required` enforced for entries the config names itself)"
        )
    keys = key_report(config, schema)
    result.keys = keys
    for path in keys.undeclared:
        fail(f"key {path} is not declared by the chart's schema (misspelled?)")
    say(
        f"keys: {len(keys.declared)} paths declared as properties, {len(keys.pattern)} as "
        f"pattern entries, {len(keys.free_form)} free-form (not checkable by the schema), "
        f"{len(keys.undeclared)} undeclared"
    )

    try:
        measured = read_measured(measured_path)
    except CheckError as exc:
        fail(str(exc))
    else:
        try:
            mismatches = resource_mismatches(config, measured)
        except CheckError as exc:
            mismatches = [str(exc)]
        for mismatch in mismatches:
            fail(f"resources: {mismatch}")
        if not mismatches:
            derived = derive_resources(measured)
            say(
                f"resources: {', '.join(f'{k}={v}' for k, v in derived.items())} "
                f"= derivation from {measured_path.name} ({RULES})"
            )

    try:
        problems = class_problems(config, exchange_docs, grading_config)
    except (CheckError, SyntaxError, KeyError, TypeError) as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    for problem in problems:
        fail(f"class: {problem}")
    if not problems:
        say(
            "class: services start in the pod (no DATABASE_URL/REDIS_URL, LABKIT_STATE_DIR on "
            "the learner's volume), culler on, exchange = RWX claim mounted at Exchange.root, "
            "course id = grading/nbgrader_config.py's, instructor profile hidden by extraConfig"
        )
    secrets = secret_findings(config)
    for path in secrets:
        fail(f"secret: {path} holds a value; put it in secrets.yaml (git-ignored) instead")
    if not secrets:
        say("secrets: no key named like a secret holds a value, no private key")
    holders = sorted(set(PLACEHOLDER.findall(config_path.read_text(encoding="utf-8"))))
    say(f"placeholders the instructor replaces: {', '.join(h[0] for h in holders) or 'none'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--measured", type=Path, default=MEASURED)
    parser.add_argument(
        "--update",
        action="store_true",
        help="rewrite the resource figures from measured.json first",
    )
    parser.add_argument("--keys", action="store_true", help="list every key path and its status")
    args = parser.parse_args(argv)
    if args.update:
        try:
            changes = update_resources(args.config, read_measured(args.measured))
        except CheckError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("updated: " + ("; ".join(changes) if changes else "nothing (already current)"))
    result = check(args.config, args.schema, args.measured)
    for line in result.lines:
        print(f"ok  {line}")
    if result.keys is not None:
        if args.keys:
            for path in result.keys.declared:
                print(f"    declared   {path}")
            for path, pattern in result.keys.pattern:
                print(f"    pattern    {path}  ({pattern!r})")
        for path, why in result.keys.free_form:
            print(f"    free-form  {path}  ({why})")
    for failure in result.failures:
        print(f"FAIL {failure}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
