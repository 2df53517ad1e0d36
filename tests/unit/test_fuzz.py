"""Bad input, fuzzed: any stack setting or worker environment either passes or is refused naming the key.

Property-based (hypothesis), derandomized so every run tries the same examples and CI never flakes:
a settings value is accepted (and then plans) or refused with a SettingsError whose every problem
names a key; the app's environment gives an AppConfig or a ConfigError naming a variable, never
with a password in it; and a refused stack registers no resource at all.
"""

from __future__ import annotations

import contextvars
import json
import string
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import settings
from app.config import AppConfig, ConfigError, from_env
from contract import wire
from settings import PROJECT, SettingsError
from tests.conftest import ROOT, STACKS

FAST = hyp_settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
"""Derandomized: the examples are a function of the test, the same on every run and machine."""

SCHEMA = settings.schema()
UNKNOWN_KEYS = ("nodecount", "brokerReplica", "workers", "x", "zone", "gkeVersion")
"""Keys not in Pulumi.yaml: misspellings (a did-you-mean hint) and plain strangers."""


def _stack_file(stack: str) -> dict[str, str]:
    """A stack file's own keys, unprefixed, every value as Pulumi hands it to the program (a string)."""
    config: dict[str, Any] = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {
        k.removeprefix(f"{PROJECT}:"): v if isinstance(v, str) else json.dumps(v)
        for k, v in config.items()
        if k.startswith(f"{PROJECT}:")
    }


BASES = {stack: _stack_file(stack) for stack in STACKS}

# Values that pass alone, so generated stacks are often accepted and the combinations get tried.
PLAUSIBLE: dict[str, list[Any]] = {
    "environment": ["dev", "prod"],
    "location": ["us-east1", "us-east1-c", "europe-west4", "europe-west4-a"],
    "nodeZones": [[], ["us-east1-b", "us-east1-c", "us-east1-d"], ["us-east1-c"], ["europe-west4-a"]],
    "machineType": ["e2-standard-2", "n2-standard-4", "c4-standard-4", "t2a-standard-2"],
    "nodeDiskType": ["pd-standard", "pd-balanced", "pd-ssd", "hyperdisk-balanced"],
    "releaseChannel": ["RAPID", "REGULAR", "STABLE"],
    "kubernetesVersion": ["1.35", "1.34"],
    "registryDomain": ["pkg.dev", "gcr.io", "eu.gcr.io"],
    "imagePlatforms": ["amd64", "amd64,arm64"],
    "brokerStorage": ["ssd", "balanced", "standard", "hyperdisk"],
    "brokerImage": ["rabbitmq:4.3.6-management", "rabbitmq:4.3.0", "rabbitmq:4.2.1", "rabbitmq:latest"],
    "schedulerRun": ["1", "run-2", "Run_3"],
    "autoscaling": ["none", "hpa", "keda"],
    "masterAuthorizedNetworks": [[], ["203.0.113.0/24"], [{"cidr": "10.0.0.0/8"}], ["10.0.0.1/8"]],
    "maintenanceWindow": ["03:00", "23:30", "", "3am", "24:00"],
}


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _raw_value(key: str) -> st.SearchStrategy[str]:
    """One raw value for ``key``: plausible for its type, of another type, or any text at all."""
    kind = SCHEMA[key]["type"] if key in SCHEMA else "string"
    typed: st.SearchStrategy[Any] = {
        "integer": st.one_of(st.integers(-3, 40), st.integers()),
        "boolean": st.booleans(),
        "array": st.lists(st.text(max_size=12), max_size=4),
    }.get(kind, st.text(max_size=20))
    return st.one_of(
        st.sampled_from(PLAUSIBLE.get(key, [SCHEMA.get(key, {}).get("default", "")])).map(_json),
        typed.map(_json),
        st.sampled_from(["", "null", "true", "0", "-1", "1.5", "NaN", "[]", "{}", '["a", 1]', "1e400"]),
        st.text(max_size=30),
    )


KEYS = st.sampled_from([*SCHEMA, *UNKNOWN_KEYS])
ENTRY = KEYS.flatmap(lambda key: st.tuples(st.sampled_from([key, f"{PROJECT}:{key}"]), _raw_value(key)))


@st.composite
def stack_configs(draw: st.DrawFn) -> tuple[str, dict[str, str], str | None]:
    """(stack name, raw config, gcp project): a stack file with some keys dropped and some replaced."""
    base = dict(BASES[draw(st.sampled_from(STACKS))])
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
        base.pop(key, None)
    raw: dict[str, str] = dict(base)
    for key, value in draw(st.lists(ENTRY, max_size=6)):
        # One spelling of a key per config, as Pulumi gives it.
        raw.pop(key.removeprefix(f"{PROJECT}:"), None)
        raw.pop(f"{PROJECT}:{key.removeprefix(f'{PROJECT}:')}", None)
        raw[key] = value
    stack = draw(st.one_of(st.sampled_from(["dev", "prod", "test-1"]), st.text(max_size=25)))
    project = draw(st.one_of(st.just("my-project-1"), st.none(), st.text(max_size=31)))
    return stack, raw, project


def _named_key(problem: str) -> str:
    key, sep, _ = problem.partition(": got ")
    assert sep, f"a problem that names no key: {problem!r}"
    return key


@FAST
@given(stack_configs())
def test_any_stack_config_is_accepted_or_refused_naming_the_key(case: tuple[str, dict[str, str], str | None]) -> None:
    stack, raw, project = case
    try:
        parsed: settings.Settings | None = settings.parse(stack, raw, project)
        problems, message = [], ""
    except SettingsError as error:
        parsed, problems, message = None, error.problems, str(error)
    given_keys = {f"{PROJECT}:{k.removeprefix(f'{PROJECT}:')}" for k in raw}
    unknown = {k for k in given_keys if k.removeprefix(f"{PROJECT}:") not in SCHEMA}
    if parsed is not None:
        event("accepted")
        assert parsed.stack == stack
        assert not unknown, f"unknown keys accepted: {unknown}"
        return
    event("refused")
    assert problems, "a SettingsError must list its problems"
    assert all(problem in message for problem in problems)
    named = {_named_key(p) for p in problems}
    known = {f"{PROJECT}:{k}" for k in SCHEMA} | {"stack", "gcp:project"}
    assert named <= known | given_keys, f"problems name keys nobody gave: {named - known - given_keys}"
    assert unknown <= named, f"unknown keys not reported: {unknown - named}"


# The app's environment: every variable contract.wire names for the worker and the scheduler.
ENV_NAMES = tuple(sorted(getattr(wire, n) for n in dir(wire) if n.startswith("ENV_")))
SECRET = "pw-Zq8xK1vT"
"""The one password the generated environments use: it must never appear in an error message."""
# Brackets included: an unbalanced one once raised a plain ValueError out of urlsplit.
HOST_CHARS = string.ascii_letters + string.digits + ".-:_/@ []"

ENV_PLAUSIBLE: dict[str, list[str]] = {
    wire.ENV_BROKER_URLS: [
        "amqp://rmq-0:5672/,amqp://rmq-1:5672/",
        f"amqp://celery:{SECRET}@rmq-0:5672//",
        f"amqp://celery:{SECRET}@rmq-0,amqp://rmq-1",
        f"amqps://celery:{SECRET}@rmq-0",
        f"amqp://celery:{SECRET}@rmq-0:99999/",
        f"amqp://:{SECRET}@rmq-0",
        "amqp://rmq-0,amqp://rmq-0",
        "amqp://rmq-0,,amqp://rmq-1",
    ],
    wire.ENV_BROKER_HOSTS: ["rmq-0,rmq-1:5673", "10.0.0.1", "rmq_0", "rmq-0:0", "rmq-0:x", "a..b"],
    wire.ENV_BROKER_PORT: ["5672", "0", "65536", "x", " 5671 "],
    wire.ENV_BROKER_VHOST: ["/", "", "celery"],
    wire.ENV_BROKER_USER: ["celery", "", "c@l:ry"],
    wire.ENV_BROKER_PASSWORD: [SECRET, ""],
    wire.ENV_PREFETCH_MULTIPLIER: ["1", "4", "0", "-1", "1000", "x"],
    wire.ENV_CONCURRENCY: ["2", "64", "65", "0", "two"],
    wire.ENV_DELIVERY_LIMIT: ["20", "1", "0", "1001", "-1"],
    wire.ENV_HEARTBEAT_FILE: ["/tmp/hb", "tmp/hb", ""],
    wire.ENV_READY_FILE: ["/tmp/ready", "ready", " "],
    wire.ENV_REMAP_SIGTERM: ["", "SIGQUIT"],
}


def _env_value(name: str) -> st.SearchStrategy[str]:
    # No NUL: an environment cannot hold one. The password only ever appears as the password.
    text = st.text(st.characters(blacklist_characters="\x00"), max_size=30).filter(lambda s: SECRET not in s)
    if name == wire.ENV_BROKER_URLS:
        text = st.one_of(text, st.text(HOST_CHARS, max_size=30).map(lambda s: f"amqp://u:{SECRET}@{s}"))
    return st.one_of(st.sampled_from(ENV_PLAUSIBLE.get(name, [""])), text)


ENV_BASES: tuple[dict[str, str], ...] = (
    {wire.ENV_BROKER_HOSTS: "rmq-0,rmq-1", wire.ENV_BROKER_USER: "celery", wire.ENV_BROKER_PASSWORD: SECRET},
    {wire.ENV_BROKER_URLS: f"amqp://celery:{SECRET}@rmq-0:5672//,amqp://celery:{SECRET}@rmq-1:5672//"},
    {wire.ENV_BROKER_URLS: "amqp://rmq-0,amqp://rmq-1", wire.ENV_BROKER_USER: "c", wire.ENV_BROKER_PASSWORD: SECRET},
)
"""Working environments (the Kubernetes form, URLs with and without credentials) that examples start from."""


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    """A working environment with some variables dropped and some set to anything."""
    environ = dict(draw(st.sampled_from(ENV_BASES)))
    for name in draw(st.lists(st.sampled_from(sorted(environ)), max_size=2)):
        environ.pop(name, None)
    for name in draw(st.lists(st.sampled_from(ENV_NAMES), max_size=4)):
        environ[name] = draw(_env_value(name))
    return environ


@FAST
@given(environments())
def test_any_environment_is_accepted_or_refused_naming_the_variable(environ: dict[str, str]) -> None:
    try:
        config: AppConfig | None = from_env(environ)
        message = ""
    except ConfigError as error:
        config, message = None, str(error)
    if config is not None:
        event("accepted")
        assert config.broker_urls, "accepted without a broker"
        assert all(SECRET not in url for url in config.redacted_urls())
        return
    event("refused")
    assert any(name in message for name in ENV_NAMES), f"names no variable: {message}"
    assert SECRET not in message, f"the password leaked into the error: {message}"


@pytest.mark.parametrize("url", [f"amqp://u:{SECRET}@rmq-0]", "amqp://[rmq-0"])
def test_unbalanced_bracket_in_a_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=wire.ENV_BROKER_URLS) as refused:
        from_env({wire.ENV_BROKER_URLS: url})
    assert SECRET not in str(refused.value)


def _run_program(stack: str, config: Mapping[str, str]) -> tuple[BaseException | None, int]:
    """Runs the program once under the plan's mocks, in a copy of the context (the SDK's config and
    stack are context variables): (the exception it raised or None, resources registered)."""
    import pulumi
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from plan.__main__ import run_program
    from plan.mocks import RecordingMocks

    mocks = RecordingMocks(project=config.get("gcp:project", "mock-project"))

    def go() -> BaseException | None:
        pulumi.runtime.set_all_config(dict(config))
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=MockMonitor(mocks))
        try:
            _sync_await(run_pulumi_func(run_program))
        except Exception as error:
            return error
        return None

    error = contextvars.copy_context().run(go)
    return error, len(mocks.registrations)


@hyp_settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(STACKS), st.lists(ENTRY.filter(lambda e: not e[0].endswith(UNKNOWN_KEYS)), max_size=3))
def test_accepted_stacks_plan_and_refused_ones_register_nothing(stack: str, entries: list[tuple[str, str]]) -> None:
    """The whole program, in-process: accepted settings plan without a traceback, refused ones stop
    at settings.load() before the first resource."""
    raw = {f"{PROJECT}:{k}": v for k, v in BASES[stack].items()}
    for key, value in entries:
        raw[f"{PROJECT}:{key.removeprefix(f'{PROJECT}:')}"] = value
    config = {"gcp:project": "my-project-1", **raw}
    try:
        settings.parse(stack, raw, config["gcp:project"])
        accepted = True
    except SettingsError:
        accepted = False
    event("accepted" if accepted else "refused")
    error, count = _run_program(stack, config)
    if accepted:
        assert error is None, f"accepted settings failed to plan: {error!r}"
        assert count > 0
    else:
        assert isinstance(error, SettingsError), f"expected a SettingsError, got {error!r}"
        assert count == 0, f"{count} resources registered before the settings were refused"
