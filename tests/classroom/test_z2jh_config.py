"""The Kubernetes kit (classroom/kubernetes/config.yaml) checked without a cluster: its keys
against the chart's own schema, its resource figures against classroom/measured.json, and
what the class needs (tools/z2jh_check.py). The checker is also shown to refuse a
misspelled key, stale figures, a duplicate key, a secret and a misplaced exchange."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "classroom" / "kubernetes"


def _load_checker():
    spec = importlib.util.spec_from_file_location("z2jh_check", ROOT / "tools" / "z2jh_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


z2jh = _load_checker()


def _measured(idle_median: float, peak_max: float) -> dict:
    """A measured.json of the shape tools/hub_bench.py writes."""
    return {
        "command": "python tools/hub_bench.py --users 3",
        "measured_at": "2026-11-30T00:00:00Z",
        "machine": {"cores": 2, "memory_mb": 24000},
        "users": 3,
        "spawn_seconds": {"median": 4.0, "max": 6.0, "samples": [3.0, 4.0, 6.0]},
        "pss_mb_per_user": {
            "idle": {"median": idle_median, "max": idle_median + 10},
            "lesson01_peak": {"median": peak_max - 20, "max": peak_max},
        },
        "pss_mb_parts_idle": {"postgres": 60, "redis": 5, "server": 150, "kernel": 85},
        "pss_mb_hub_and_proxy": 180,
    }


@pytest.fixture
def config_copy(tmp_path):
    """A copy of config.yaml to break, checked with the real schema and measured.json."""
    copy = tmp_path / "config.yaml"
    copy.write_text((KIT / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return copy


def _failures(config: Path, measured: Path = z2jh.MEASURED) -> list[str]:
    return z2jh.check(config_path=config, measured_path=measured).failures


def test_config_passes_every_check():
    """config.yaml parses, validates against the chart's schema, declares every key outside
    the free-form places, holds the figures derived from measured.json, and meets the
    class's needs."""
    result = z2jh.check()
    assert result.failures == [], "\n".join(result.failures)
    assert result.keys.undeclared == []
    declared = set(result.keys.declared)
    for path in (
        "singleuser.image.name",
        "singleuser.memory.guarantee",
        "singleuser.memory.limit",
        "singleuser.cpu.guarantee",
        "singleuser.cpu.limit",
        "singleuser.storage.extraVolumes",
        "singleuser.extraFiles.nbgrader-config.mountPath",
        "cull.enabled",
        "cull.timeout",
    ):
        assert path in declared, f"{path} is not among the schema-declared paths"
    free = {path for path, _ in result.keys.free_form}
    assert "singleuser.extraEnv.LABKIT_STATE_DIR" in free  # free-form by the chart's design


def test_schema_is_the_recorded_one():
    """The stored schema's sha256 is the one SCHEMA-PROVENANCE.md records, with the
    repository, path, commit and the chart version config.yaml names."""
    note = z2jh.provenance()
    assert z2jh.sha256(KIT / "values.schema.yaml") == note["sha256"]
    assert note["repository"] == "jupyterhub/zero-to-jupyterhub-k8s"
    assert note["path"] == "jupyterhub/values.schema.yaml"
    assert re.fullmatch(r"[0-9a-f]{40}", note["commit"])
    assert (
        z2jh.chart_version_named(KIT / "config.yaml") == note["chart version named in config.yaml"]
    )
    assert "BSD 3-Clause License" in (KIT / "SCHEMA-PROVENANCE.md").read_text(encoding="utf-8")


def test_misspelled_key_is_refused(config_copy):
    """A key the chart does not know (a typo) fails both the schema and the key walk."""
    text = config_copy.read_text(encoding="utf-8")
    assert "  startTimeout: 600\n" in text
    config_copy.write_text(text.replace("  startTimeout: 600\n", "  startTimout: 600\n"))
    failures = _failures(config_copy)
    assert any("singleuser.startTimout is not declared" in f for f in failures), failures
    assert any(f.startswith("schema: singleuser:") and "startTimout" in f for f in failures)


def test_entry_missing_a_required_field_is_refused(config_copy):
    """`required` still holds for entries the config names itself: an extraFiles entry
    without its mountPath fails (the chart's defaults cannot supply it)."""
    text = config_copy.read_text(encoding="utf-8")
    line = "      mountPath: /etc/jupyter/nbgrader_config.py\n"
    assert line in text
    config_copy.write_text(text.replace(line, ""))
    failures = _failures(config_copy)
    assert (
        "schema: singleuser.extraFiles.nbgrader-config: 'mountPath' is a required property"
        in failures
    ), failures


def test_stale_resource_figures_are_refused(tmp_path):
    """Re-measuring without updating config.yaml fails: the figures no longer match."""
    measured = z2jh.read_measured()
    per_user = measured["pss_mb_per_user"]
    stale = _measured(per_user["idle"]["median"] + 200, per_user["lesson01_peak"]["max"] + 300)
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(stale))
    failures = _failures(KIT / "config.yaml", path)
    assert any(f.startswith("resources: memory.guarantee") for f in failures), failures
    assert any(f.startswith("resources: memory.limit") for f in failures), failures


def test_derivation_rules():
    """guarantee = idle median rounded up to 64 MiB; limit = peak max x 1.5 rounded up to
    64 MiB; the instructor gets twice the learner's limit; CPU is the stated policy."""
    derived = z2jh.derive_resources(_measured(300.0, 610.0))
    assert derived == {
        "memory.guarantee": "320M",  # 300 -> 320
        "memory.limit": "960M",  # 610 x 1.5 = 915 -> 960
        "cpu.guarantee": 0.1,
        "cpu.limit": 2.0,
        "instructor.mem_limit": "1920M",
    }
    assert z2jh.derive_resources(_measured(320.0, 640.0))["memory.guarantee"] == "320M"
    assert z2jh.derive_resources(_measured(320.5, 640.0))["memory.limit"] == "960M"


def test_update_rewrites_the_figures(config_copy, tmp_path):
    """`--update` rewrites exactly the marked figures, after which the check passes."""
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(_measured(700.0, 1000.0)))
    assert any(f.startswith("resources:") for f in _failures(config_copy, path))
    changes = z2jh.update_resources(config_copy, z2jh.read_measured(path))
    assert {c.split(":")[0] for c in changes} >= {"memory.guarantee", "memory.limit"}
    assert "guarantee: 704M  # z2jh_check: memory.guarantee" in config_copy.read_text()
    assert not [f for f in _failures(config_copy, path) if f.startswith("resources:")]


def test_duplicate_key_is_refused(config_copy):
    """A key given twice is an error, not a silent last-one-wins."""
    text = config_copy.read_text(encoding="utf-8")
    config_copy.write_text(
        text.replace("cull:\n  enabled: true\n", "cull:\n  enabled: true\n  enabled: false\n")
    )
    failures = _failures(config_copy)
    assert any("duplicate key 'enabled'" in f for f in failures), failures


def test_secret_in_the_file_is_refused(config_copy):
    """A secret set in config.yaml (here the proxy token) fails the check."""
    text = config_copy.read_text(encoding="utf-8")
    config_copy.write_text(text.replace("proxy:\n", "proxy:\n  secretToken: 0123456789abcdef\n", 1))
    assert (
        "secret: proxy.secretToken holds a value; put it in secrets.yaml (git-ignored) instead"
        in _failures(config_copy)
    )


def test_exchange_elsewhere_is_refused(config_copy):
    """nbgrader's Exchange.root must be where the shared volume is mounted."""
    text = config_copy.read_text(encoding="utf-8")
    old = 'c.Exchange.root = "/srv/nbgrader/exchange"'
    assert old in text
    config_copy.write_text(text.replace(old, 'c.Exchange.root = "/tmp/exchange"'))
    failures = _failures(config_copy)
    assert any(
        "Exchange.root '/tmp/exchange' is not where the exchange volume" in f for f in failures
    )


def test_instructor_profile_hidden_from_students():
    """hub.extraConfig's profile filter, run on the config's own profile list: students get
    only the student profile, members of `instructors` get both."""
    from traitlets.config import Config

    config = z2jh.load_yaml(KIT / "config.yaml")
    c = Config()
    c.KubeSpawner.profile_list = config["singleuser"]["profileList"]
    namespace = {"c": c}
    exec(config["hub"]["extraConfig"]["10-instructor-profile.py"], namespace)  # noqa: S102
    choose = c.KubeSpawner.profile_list

    def slugs(groups):
        user = SimpleNamespace(groups=[SimpleNamespace(name=g) for g in groups])
        return [p["slug"] for p in choose(SimpleNamespace(user=user))]

    assert slugs([]) == ["student"]
    assert slugs(["students"]) == ["student"]
    assert slugs(["instructors"]) == ["student", "instructor"]


def test_private_values_template_is_valid_and_empty():
    """secrets.example.yaml, the shape of the instructor's private values file, uses only
    keys the chart declares (hub.config's are free-form) and carries no value."""
    example = z2jh.load_yaml(KIT / "secrets.example.yaml")
    schema = z2jh.load_yaml(KIT / "values.schema.yaml")
    assert z2jh.schema_errors(example, schema) == []
    report = z2jh.key_report(example, schema)
    assert report.undeclared == []
    assert "imagePullSecret.password" in report.declared
    assert z2jh.secret_findings(example) == []
