"""The stack-file and --set front doors, fuzzed (issue 28 item 7): any input is accepted (and then
means what it says) or refused by name with a bounded message; nothing crashes or hangs.

Derandomized hypothesis, as tests/test_fuzz.py: the same examples on every run and machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import settings
from plan import stackfile
from plan.__main__ import stack_config
from settings import PROJECT, SettingsError

FUZZ = hyp_settings(
    max_examples=300,
    deadline=2000,  # ms per example: an alias bomb or a quadratic path would blow it
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SCHEMA = settings.schema()
MAX_MESSAGE = 40 * 4096 + 400
"""A SettingsError lists at most 40 problems; each echoes at most 80 characters of a value (the
allowed-values text of an unknown key lists every key: under 1 KiB)."""

TOKENS = [
    "config:",
    "ha-celery:",
    "hacelery:",
    "gcp:project",
    "\n",
    "\n  ",
    "\t",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "!!str ",
    "!!python/object:os.system ",
    "---\n",
    "...\n",
    "'",
    '"',
    "#",
    "? ",
    "|\n  ",
    "~",
    "yes",
    "1.30",
    "13:00",
    "0x10",
    "1e400",
    "\u0663",
    "\u00b2",
    "\ufeff",
    "\u2028",
    "\x00",
    "\x85",
]
KEYS = [*SCHEMA, "brokerReplica", "x"]


def _bounded(error: SettingsError) -> None:
    assert error.problems, "a SettingsError lists its problems"
    assert len(str(error)) < MAX_MESSAGE, len(str(error))
    for problem in error.problems:
        assert ": got " in problem, problem


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=30)), max_size=40))
def test_any_stack_file_text_is_read_or_refused_naming_the_file(tmp_path: Path, parts: list[str]) -> None:
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text("".join(parts), encoding="utf-8", errors="surrogatepass")
    try:
        config, refusal = stackfile.read(path), ""
    except stackfile.StackFileError as error:
        config, refusal = {}, str(error)
    if refusal:
        event("refused")
        assert refusal.startswith("Pulumi.fuzz.yaml"), refusal
        return
    event("read")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.items())
    try:
        settings.parse("fuzz", config, "my-project-1")
    except SettingsError as error:
        _bounded(error)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)


@FUZZ
@given(st.dictionaries(st.sampled_from([f"{PROJECT}:{k}" for k in KEYS] + ["gcp:project"]), YAML_VALUES, max_size=8))
def test_yaml_documents_become_strings_pulumi_would_pass(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text(yaml.safe_dump({"config": config}, allow_unicode=True))
    read = stackfile.read(path)  # any document yaml.safe_dump writes is a readable stack file
    assert sorted(read) == sorted(config)
    for key, value in config.items():
        if isinstance(value, str):
            assert read[key] == value, key  # quoted when needed: the text is the value
        elif isinstance(value, (list, dict)):
            json.loads(read[key])
    try:
        settings.parse("fuzz", read, "my-project-1")
    except SettingsError as error:
        _bounded(error)


# What an accepted --set must mean: the value as given (the type applied), nowhere transformed.
ACCEPTED_MEANS: dict[str, Any] = {
    "kubernetesVersion": lambda s: s.cluster.kubernetes_version,
    "maintenanceWindow": lambda s: s.cluster.maintenance_window,
    "opsNamespace": lambda s: s.network.ops_namespace,
    "brokerImage": lambda s: s.broker.image,
    "machineType": lambda s: s.cluster.machine_type,
    "schedulerRun": lambda s: s.workers.scheduler_run,
    "location": lambda s: s.cluster.location,
    "nodeCount": lambda s: str(s.cluster.node_count),
    "brokerReplicas": lambda s: str(s.broker.replicas),
    "workerMemoryMiB": lambda s: str(s.workers.memory_mib),
    "spotNodes": lambda s: json.dumps(s.cluster.spot_nodes),
    "brokerTls": lambda s: json.dumps(s.broker.tls),
}
SET_VALUES = st.one_of(
    st.sampled_from(
        ["", "yes", "true", "True", "1.30", "13:00", "3", "5", "٣", "3\n", "null", "[", "*a", "e2-standard-4"]
    ),
    st.text(max_size=40),
    st.text(alphabet="abc-:.0123456789\n\t ", min_size=1000, max_size=6000),
)


@FUZZ
@given(st.sampled_from(KEYS), SET_VALUES, st.sampled_from(["dev", "prod"]))
def test_any_set_value_is_accepted_meaning_what_it_says_or_refused_by_name(key: str, value: str, stack: str) -> None:
    if "\x00" in value:
        value = value.replace("\x00", "")  # argv cannot carry NUL; stack_config takes what argv gives
    full = f"{PROJECT}:{key}"
    if value == "" and key not in SCHEMA:
        with pytest.raises(SystemExit, match=f"plan: --set '{key}'= unsets no key of Pulumi.yaml"):
            stack_config(stack, [f"{key}={value}"])
        return
    config = stack_config(stack, [f"{key}={value}"])
    if value == "":
        assert full not in config, "empty unsets"
    else:
        assert config[full] == value, "stored as given, never parsed"
    try:
        parsed = settings.parse(stack, {k: v for k, v in config.items() if k.startswith(PROJECT)}, "my-project-1")
        refusal: SettingsError | None = None
    except SettingsError as error:
        refusal = error
    if refusal is not None:
        event("refused")
        _bounded(refusal)
        named = any(p.startswith(f"{full}: got ") for p in refusal.problems)
        assert value == "" or named, f"{key}={value!r} refused without naming {full}: {refusal.problems}"
        return
    event("accepted")
    assert key in SCHEMA, f"unknown key {key} accepted"
    if value and key in ACCEPTED_MEANS:
        assert ACCEPTED_MEANS[key](parsed) == value, f"{key}={value!r} accepted as {ACCEPTED_MEANS[key](parsed)!r}"


@pytest.mark.parametrize("size", [1 << 16, 1 << 20])
def test_a_huge_set_value_is_refused_quickly_and_briefly(size: int) -> None:
    config = stack_config("dev", [f"brokerImage={'a' * size}"])
    with pytest.raises(SettingsError) as error:
        settings.parse("dev", {k: v for k, v in config.items() if k.startswith(PROJECT)}, "my-project-1")
    assert len(str(error.value)) < 1000
