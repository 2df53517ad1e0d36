"""The Celery app's configuration, timing contract, health check, records and
idempotency helper: fast, no broker."""

from __future__ import annotations

import inspect
import json
import os
import random
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import amqp
import pytest
from celery import Celery
from celery.app.defaults import DEFAULTS
from celery.worker.consumer import Consumer as StockConsumer

from app import health, tasks
from app.batch import ProgressCallback, Publisher, PublishPlan, PublishResult
from app.bootsteps import Consumer, HealthStep, MetricsStep
from app.config import AppConfig, ConfigError, celery_settings, from_env
from app.factory import make_app
from app.idempotency import Claimed, ClaimStore, FileDoneStore, MemoryDoneStore, idempotent, kwarg_key
from app.metrics import MetricsConfigError
from app.scheduler import PLANS, run_with_progress
from app.scheduler import main as scheduler_main
from contract import metrics, timing, wire
from tests.conftest import ROOT

HOSTS_ENV = {
    "BROKER_HOSTS": "rmq-0.rmq-headless.ns.svc.cluster.local,rmq-1.rmq-headless.ns.svc.cluster.local:5673",
    "BROKER_USER": "celery",
    "BROKER_PASSWORD": "p@ss/w:rd#1",
}


def build_app(environ: dict[str, str] | None = None, seed: int = 0) -> Celery:
    return make_app(from_env(environ or HOSTS_ENV), random.Random(seed))


# --------------------------------------------------------------------------- from_env


def test_hosts_form_builds_one_quoted_url_per_host() -> None:
    config = from_env(HOSTS_ENV)
    assert config.broker_urls == (
        "amqp://celery:p%40ss%2Fw%3Ard%231@rmq-0.rmq-headless.ns.svc.cluster.local:5672/%2F",
        "amqp://celery:p%40ss%2Fw%3Ard%231@rmq-1.rmq-headless.ns.svc.cluster.local:5673/%2F",
    )


def test_hosts_form_round_trips_through_kombu() -> None:
    from kombu import Connection

    conn = Connection(from_env({**HOSTS_ENV, "BROKER_VHOST": "jobs"}).broker_urls[0])
    assert (conn.userid, conn.password, conn.virtual_host, conn.port) == ("celery", "p@ss/w:rd#1", "jobs", 5672)


def test_defaults() -> None:
    config = from_env(HOSTS_ENV)
    assert config.prefetch_multiplier == 1
    assert config.concurrency == 2
    assert str(config.heartbeat_file) == "/tmp/worker-heartbeat"
    assert str(config.ready_file) == "/tmp/worker-ready"


def test_urls_form_inline_credentials() -> None:
    env = {"BROKER_URLS": " amqp://u:pw@a:5672/%2F , amqp://u:pw@b:5672/%2F "}
    assert from_env(env).broker_urls == ("amqp://u:pw@a:5672/%2F", "amqp://u:pw@b:5672/%2F")


def test_urls_form_credentials_from_env() -> None:
    env = {"BROKER_URLS": "amqp://a:5672/,amqp://b/", "BROKER_USER": "u", "BROKER_PASSWORD": "s3cr=t"}
    assert from_env(env).broker_urls == ("amqp://u:s3cr%3Dt@a:5672/", "amqp://u:s3cr%3Dt@b/")


def test_tuning_and_paths_from_env() -> None:
    env = {
        **HOSTS_ENV,
        "WORKER_PREFETCH_MULTIPLIER": "4",
        "WORKER_CONCURRENCY": "8",
        "HEALTH_HEARTBEAT_FILE": "/run/hb",
        "HEALTH_READY_FILE": "/run/ready",
    }
    config = from_env(env)
    assert (config.prefetch_multiplier, config.concurrency) == (4, 8)
    assert (str(config.heartbeat_file), str(config.ready_file)) == ("/run/hb", "/run/ready")


INVALID: list[tuple[str, dict[str, str], list[str]]] = [
    ("nothing", {}, ["BROKER_URLS", "BROKER_HOSTS"]),
    ("both forms", {**HOSTS_ENV, "BROKER_URLS": "amqp://u:p@a/"}, ["BROKER_URLS", "BROKER_HOSTS", "exactly one"]),
    ("port not int", {**HOSTS_ENV, "BROKER_PORT": "amqp"}, ["BROKER_PORT='amqp'", "1..65535"]),
    ("port zero", {**HOSTS_ENV, "BROKER_PORT": "0"}, ["BROKER_PORT='0'", "1..65535"]),
    ("host port", {**HOSTS_ENV, "BROKER_HOSTS": "rmq-0:99999"}, ["BROKER_HOSTS", "'rmq-0:99999'", "1..65535"]),
    ("bad host", {**HOSTS_ENV, "BROKER_HOSTS": "rmq_0"}, ["BROKER_HOSTS", "'rmq_0'", "hostname"]),
    ("empty entry", {**HOSTS_ENV, "BROKER_HOSTS": "a,,b"}, ["BROKER_HOSTS='a,,b'", "empty"]),
    ("duplicate", {**HOSTS_ENV, "BROKER_HOSTS": "a,b,a"}, ["BROKER_HOSTS='a,b,a'", "twice"]),
    ("no user", {"BROKER_HOSTS": "a", "BROKER_PASSWORD": "x"}, ["BROKER_USER", "Secret"]),
    ("no password", {"BROKER_HOSTS": "a", "BROKER_USER": "u"}, ["BROKER_PASSWORD", "Secret"]),
    ("empty vhost", {**HOSTS_ENV, "BROKER_VHOST": ""}, ["BROKER_VHOST"]),
    ("url scheme", {"BROKER_URLS": "http://u:p@a/"}, ["BROKER_URLS", "'http://u:***@a/'", "amqp://"]),
    ("url no host", {"BROKER_URLS": "amqp://u:p@:5672/"}, ["BROKER_URLS", "host"]),
    ("url bad port", {"BROKER_URLS": "amqp://u:p@a:x/"}, ["BROKER_URLS", "port"]),
    ("url no creds", {"BROKER_URLS": "amqp://a/"}, ["BROKER_URLS", "BROKER_USER", "BROKER_PASSWORD"]),
    ("url half creds", {"BROKER_URLS": "amqp://u@a/"}, ["BROKER_URLS", "user and a password"]),
    (
        "creds twice",
        {"BROKER_URLS": "amqp://u:p@a/", "BROKER_USER": "u", "BROKER_PASSWORD": "p"},
        ["BROKER_URLS", "one place"],
    ),
    ("port with urls", {"BROKER_URLS": "amqp://u:p@a/", "BROKER_PORT": "5672"}, ["BROKER_PORT", "BROKER_HOSTS"]),
    ("prefetch 0", {**HOSTS_ENV, "WORKER_PREFETCH_MULTIPLIER": "0"}, ["WORKER_PREFETCH_MULTIPLIER='0'", "1..16"]),
    ("prefetch big", {**HOSTS_ENV, "WORKER_PREFETCH_MULTIPLIER": "17"}, ["WORKER_PREFETCH_MULTIPLIER='17'", "1..16"]),
    ("prefetch text", {**HOSTS_ENV, "WORKER_PREFETCH_MULTIPLIER": "one"}, ["WORKER_PREFETCH_MULTIPLIER='one'"]),
    ("concurrency", {**HOSTS_ENV, "WORKER_CONCURRENCY": "0"}, ["WORKER_CONCURRENCY='0'", "1..64"]),
    ("delivery limit 0", {**HOSTS_ENV, "WORKER_DELIVERY_LIMIT": "0"}, ["WORKER_DELIVERY_LIMIT='0'", "1..1000"]),
    ("delivery limit -1", {**HOSTS_ENV, "WORKER_DELIVERY_LIMIT": "-1"}, ["WORKER_DELIVERY_LIMIT='-1'", "1..1000"]),
    (
        "memory per child in bytes",
        {**HOSTS_ENV, "WORKER_MAX_MEMORY_PER_CHILD_KIB": "268435456"},
        ["WORKER_MAX_MEMORY_PER_CHILD_KIB='268435456'", "1024..67108864"],
    ),
    ("memory per child tiny", {**HOSTS_ENV, "WORKER_MAX_MEMORY_PER_CHILD_KIB": "10"}, ["1024..67108864"]),
    ("relative hb", {**HOSTS_ENV, "HEALTH_HEARTBEAT_FILE": "hb"}, ["HEALTH_HEARTBEAT_FILE='hb'", "absolute"]),
    ("relative ready file", {**HOSTS_ENV, "HEALTH_READY_FILE": "ready"}, ["HEALTH_READY_FILE='ready'", "absolute"]),
    ("remap sigterm", {**HOSTS_ENV, "REMAP_SIGTERM": "SIGQUIT"}, ["REMAP_SIGTERM='SIGQUIT'", "unset"]),
]


@pytest.mark.parametrize(("env", "expected"), [(e, x) for _, e, x in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_env_names_variable_value_and_allowed(env: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    for fragment in expected:
        assert fragment in str(info.value), f"{fragment!r} missing from: {info.value}"


@pytest.mark.parametrize(
    "env",
    [
        {"BROKER_URLS": "http://u:topsecret@a/"},
        {"BROKER_URLS": "amqp://u:topsecret@a/,amqp://u:topsecret@a/"},
        {"BROKER_URLS": "amqp://u:topsecret@a/", "BROKER_USER": "u"},
        {"BROKER_HOSTS": "a", "BROKER_USER": "u", "BROKER_PASSWORD": "topsecret", "BROKER_PORT": "x"},
    ],
)
def test_errors_never_show_the_password(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    assert "topsecret" not in str(info.value)


def test_password_kept_out_of_repr_and_redacted_urls() -> None:
    config = from_env(HOSTS_ENV)
    assert "p%40ss" not in repr(config)
    assert all(":***@" in url for url in config.redacted_urls())
    assert not any("p%40ss" in url for url in config.redacted_urls())


def test_failover_list_is_shuffled_per_process() -> None:
    config = AppConfig(broker_urls=tuple(f"amqp://u:p@rmq-{i}/" for i in range(3)))
    orders = {config.shuffled_urls(random.Random(seed)) for seed in range(20)}
    assert all(sorted(order) == sorted(config.broker_urls) for order in orders)
    assert len(orders) > 1, "every process would start on the same node"
    assert config.shuffled_urls(random.Random(7)) == config.shuffled_urls(random.Random(7))


def test_importing_the_worker_app_without_broker_config_fails_with_the_variable_names() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    done = subprocess.run(
        [sys.executable, "-c", "import app.celery_app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ConfigError" in done.stderr
    assert "BROKER_URLS" in done.stderr
    assert "BROKER_HOSTS" in done.stderr


def test_app_package_imports_only_what_the_image_ships() -> None:
    # The worker image ships app/ and contract/ alone: importing every app module must need nothing else.
    modules = ", ".join(f"app.{path.stem}" for path in sorted((ROOT / "app").glob("*.py")) if path.stem != "__init__")
    code = (
        f"import sys, {modules}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pulumi', 'pulumi_gcp', 'pulumi_kubernetes', 'components', 'settings', 'broker', 'drill', "
        "'harness', 'bench', 'plan'})\n"
        "print(bad)"
    )
    env = {**os.environ, **HOSTS_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_health_probe_does_not_import_celery_or_kombu() -> None:
    # The probe runs every few seconds in every pod; importing Celery or kombu.entity costs ~0.3 s of CPU each time.
    code = "import sys, app.health; print(any(m.split('.')[0] in {'celery', 'kombu'} for m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "False", done.stderr


# ------------------------------------------------------------------- Celery settings

EXPECTED_SETTINGS: list[tuple[str, Any]] = [
    ("task_default_queue_type", "quorum"),
    ("task_create_missing_queue_type", "quorum"),
    ("task_default_exchange_type", "topic"),
    ("task_create_missing_queue_exchange_type", "topic"),
    ("broker_native_delayed_delivery_queue_type", "quorum"),
    ("task_acks_late", True),
    ("task_reject_on_worker_lost", True),
    ("task_acks_on_failure", False),
    ("task_acks_on_timeout", False),
    ("worker_prefetch_multiplier", 1),
    ("worker_concurrency", 2),
    ("worker_detect_quorum_queues", True),
    ("worker_cancel_long_running_tasks_on_connection_loss", True),
    ("worker_soft_shutdown_timeout", 0.0),
    ("worker_enable_soft_shutdown_on_idle", False),
    ("broker_heartbeat", timing.BROKER_HEARTBEAT_S),
    ("broker_heartbeat_checkrate", 10),
    ("broker_connection_timeout", timing.BROKER_CONNECT_TIMEOUT_S),
    ("broker_connection_retry", True),
    ("broker_connection_retry_on_startup", True),
    ("broker_connection_max_retries", None),
    ("broker_channel_error_retry", True),
    ("broker_failover_strategy", "round-robin"),
    ("task_publish_retry", True),
    ("task_time_limit", timing.TASK_TIME_LIMIT_S),
    ("task_soft_time_limit", timing.TASK_SOFT_TIME_LIMIT_S),
    ("task_serializer", "json"),
    ("accept_content", ["json"]),
    ("result_backend", None),
    ("task_ignore_result", True),
    ("task_default_delivery_mode", "persistent"),
    ("worker_send_task_events", False),
]


@pytest.mark.parametrize(("key", "value"), EXPECTED_SETTINGS, ids=[k for k, _ in EXPECTED_SETTINGS])
def test_reliability_setting(key: str, value: Any) -> None:
    app = build_app()
    assert app.conf[key] == value, f"app.conf.{key} = {app.conf[key]!r}, want {value!r}"


def test_publisher_confirms_and_patient_reconnects() -> None:
    options = build_app().conf.broker_transport_options
    assert options["confirm_publish"] is True
    assert options["connect_retries_timeout"] >= timing.FAILOVER_WINDOW_S
    assert options["max_retries"] == timing.PUBLISH_RETRY_MAX_RETRIES


def test_publish_retry_policy_outlasts_a_failover() -> None:
    policy = build_app().conf.task_publish_retry_policy
    assert policy == {
        "max_retries": timing.PUBLISH_RETRY_MAX_RETRIES,
        "interval_start": timing.PUBLISH_RETRY_INTERVAL_START_S,
        "interval_step": timing.PUBLISH_RETRY_INTERVAL_STEP_S,
        "interval_max": timing.PUBLISH_RETRY_INTERVAL_MAX_S,
    }
    assert timing.publish_retry_total_s() >= timing.FAILOVER_WINDOW_S


def test_broker_url_is_the_whole_shuffled_failover_list() -> None:
    config = from_env(HOSTS_ENV)
    app = make_app(config, random.Random(3))
    # Indexing, not the attribute: celery-types declares broker_url a str, Celery also takes a failover list.
    assert app.conf["broker_url"] == list(config.shuffled_urls(random.Random(3)))


def test_max_memory_per_child_from_env_reaches_the_app() -> None:
    app = build_app({**HOSTS_ENV, "WORKER_MAX_MEMORY_PER_CHILD_KIB": "120000"})
    assert app.conf.worker_max_memory_per_child == 120000
    assert build_app(HOSTS_ENV).conf.worker_max_memory_per_child is None


def test_delivery_limit_from_env_reaches_the_app_and_defaults_to_the_brokers() -> None:
    assert build_app({**HOSTS_ENV, "WORKER_DELIVERY_LIMIT": "3"}).conf.ha_delivery_limit == 3
    assert build_app(HOSTS_ENV).conf.ha_delivery_limit == wire.DELIVERY_LIMIT


def test_prefetch_multiplier_from_env_reaches_the_app() -> None:
    assert build_app({**HOSTS_ENV, "WORKER_PREFETCH_MULTIPLIER": "8"}).conf.worker_prefetch_multiplier == 8


def test_task_queue_is_a_durable_quorum_queue_on_a_topic_exchange() -> None:
    queue = build_app().amqp.queues[wire.QUEUE_NAME]
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert queue.durable
    assert queue.exchange.type == "topic"
    assert queue.exchange.durable


def test_tasks_and_health_step_are_registered() -> None:
    app = build_app()
    for name in (tasks.COUNT, tasks.NOOP, tasks.SLEEP_MS):
        assert name in app.tasks, f"task {name} not registered"
    assert HealthStep in app.steps["consumer"]
    assert MetricsStep in app.steps["consumer"]


def test_every_setting_is_one_celery_knows() -> None:
    """Celery accepts any key silently: a misspelt setting would simply not apply."""
    known = set(DEFAULTS)
    ours = celery_settings(from_env(HOSTS_ENV), random.Random(0))
    custom = {key for key in ours if key.startswith("ha_")}
    assert custom == {"ha_heartbeat_file", "ha_ready_file", "ha_metrics_port", "ha_metrics_dir", "ha_delivery_limit"}, (
        "custom keys are prefixed ha_ and read by our bootsteps"
    )
    unknown = sorted(set(ours) - custom - known)
    assert not unknown, f"not Celery settings: {unknown}"


def test_every_transport_option_is_one_kombu_reads() -> None:
    options = celery_settings(from_env(HOSTS_ENV), random.Random(0))["broker_transport_options"]
    assert isinstance(options, dict)
    # kombu reads the failover options (Connection._extract_failover_opts) and hands the rest to
    # py-amqp's Connection, whose keyword arguments are the only other ones that take effect.
    failover = {"connect_retries_timeout", "max_retries", "interval_start", "interval_step", "interval_max"}
    amqp_kwargs = set(inspect.signature(amqp.Connection.__init__).parameters)
    assert set(options) - failover <= amqp_kwargs, set(options) - failover - amqp_kwargs


def test_the_worker_consumer_replaces_only_the_delayed_delivery_step() -> None:
    ours, stock = Consumer.Blueprint.default_steps, StockConsumer.Blueprint.default_steps
    assert len(ours) == len(stock)
    assert [s for s in ours if s not in stock] == ["app.bootsteps:LiveDelayedDelivery"]
    assert [s for s in stock if s not in ours] == ["celery.worker.consumer.delayed_delivery:DelayedDelivery"]
    assert build_app().conf.worker_consumer == "app.bootsteps:Consumer"


# ------------------------------------------------------------------ timing contract


def test_time_limits_are_ordered() -> None:
    assert 0 < timing.TASK_SOFT_TIME_LIMIT_S < timing.TASK_TIME_LIMIT_S
    assert tasks.COUNT_TO < timing.TASK_SOFT_TIME_LIMIT_S, "the seed's count task must fit in the soft limit"


def test_termination_grace_covers_the_longest_task_plus_shutdown() -> None:
    assert timing.MIN_TERMINATION_GRACE_S >= 60
    assert timing.MIN_TERMINATION_GRACE_S >= timing.TASK_TIME_LIMIT_S + timing.SHUTDOWN_MARGIN_S


def test_soft_shutdown_cannot_starve_heartbeats() -> None:
    # Celery's soft shutdown blocks the event loop; anything near 2 heartbeats drops the connection.
    assert timing.SOFT_SHUTDOWN_TIMEOUT_S == 0 or timing.SOFT_SHUTDOWN_TIMEOUT_S < timing.BROKER_HEARTBEAT_S
    assert timing.SOFT_SHUTDOWN_TIMEOUT_S < timing.MIN_TERMINATION_GRACE_S


def test_consumer_timeout_exceeds_worst_case_unacked_time() -> None:
    worst_unacked_ms = (timing.MAX_PREFETCH_MULTIPLIER + 1) * timing.TASK_TIME_LIMIT_S * 1000
    assert worst_unacked_ms < timing.MIN_CONSUMER_TIMEOUT_MS <= timing.CONSUMER_TIMEOUT_MS


def test_liveness_tolerates_a_failover() -> None:
    assert timing.LIVENESS_MAX_AGE_S > timing.FAILOVER_WINDOW_S
    assert timing.LIVENESS_MAX_AGE_S >= 3 * timing.HEALTH_HEARTBEAT_INTERVAL_S


def test_heartbeat_detects_dead_broker_within_failover_window() -> None:
    detection_s = 2 * timing.BROKER_HEARTBEAT_S + timing.BROKER_CONNECT_TIMEOUT_S
    assert detection_s < timing.FAILOVER_WINDOW_S
    # A frozen node holds a worker for about two heartbeats, never as long as the liveness limit.
    assert 2 * timing.BROKER_HEARTBEAT_S < timing.FROZEN_BROKER_HOLD_MAX_S < 3 * timing.BROKER_HEARTBEAT_S
    assert timing.FROZEN_BROKER_HOLD_MAX_S < timing.LIVENESS_MAX_AGE_S
    assert timing.BROKER_HEARTBEAT_S % timing.BROKER_HEARTBEAT_CHECK_S == 0, "Celery's check rate is an int"


# ------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "app" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_runs_celery_as_pid_1_with_the_worker_command() -> None:
    instructions = dockerfile_instructions()
    cmds = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert len(cmds) == 1
    assert tuple(json.loads(cmds[0])) == wire.WORKER_COMMAND, "CMD must be exec form and match WORKER_COMMAND"
    assert not [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"], "no shell wrapper"


def test_dockerfile_base_image_pinned_and_user_non_root() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms
    for image in froms:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users[-1] == "10001:10001"


def test_dockerfile_does_not_remap_sigterm() -> None:
    assert "REMAP_SIGTERM" not in " ".join(rest for _, rest in dockerfile_instructions())


# ---------------------------------------------------------------------------- health


def test_health_check_verdicts(tmp_path: Path) -> None:
    hb, ready = tmp_path / "hb", tmp_path / "ready"
    assert not health.check(hb, ready, max_age_s=60, require_ready=False).healthy
    health.touch(hb)
    assert health.check(hb, ready, max_age_s=60, require_ready=False).healthy
    assert not health.check(hb, ready, max_age_s=60, require_ready=True).healthy
    health.claim(ready)
    assert health.check(hb, ready, max_age_s=60, require_ready=True).healthy
    stale = health.check(hb, ready, max_age_s=60, require_ready=False, now=time.time() + 61)
    assert not stale.healthy
    assert "old" in stale.reason


def test_liveness_rides_out_an_outage_up_to_the_budget(tmp_path: Path) -> None:
    """Disconnected (or never connected): live while reconnecting, not ready, until the budget runs out."""
    hb, ready = tmp_path / "hb", tmp_path / "ready"
    marker = health.disconnected_marker(hb)
    health.touch(marker)
    now = time.time()
    long_outage = now + timing.LIVENESS_MAX_AGE_S * 3
    assert health.check(hb, ready, max_age_s=60, require_ready=False, now=long_outage).healthy
    assert not health.check(hb, ready, max_age_s=60, require_ready=True, now=long_outage).healthy
    over = health.check(hb, ready, max_age_s=60, require_ready=False, now=now + timing.OUTAGE_BUDGET_S + 1)
    assert not over.healthy
    assert "reconnecting in vain" in over.reason
    # Consuming again: the marker is gone and a stale heartbeat fails liveness as before.
    marker.unlink()
    health.touch(hb)
    assert not health.check(hb, ready, max_age_s=60, require_ready=False, now=long_outage).healthy


def test_health_cli_exit_codes(tmp_path: Path) -> None:
    env = {"HEALTH_HEARTBEAT_FILE": str(tmp_path / "hb"), "HEALTH_READY_FILE": str(tmp_path / "ready")}
    assert health.main([], env) == 1
    health.touch(tmp_path / "hb")
    assert health.main(["--max-age", "30"], env) == 0
    assert health.main(["--ready"], env) == 1
    os.utime(tmp_path / "hb", (time.time() - 100, time.time() - 100))
    assert health.main(["--max-age", "90"], env) == 1


class FakeTimerEntry:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimer:
    def __init__(self) -> None:
        self.entries: list[tuple[float, Any, FakeTimerEntry]] = []

    def call_repeatedly(self, secs: float, fun: Any) -> FakeTimerEntry:
        entry = FakeTimerEntry()
        self.entries.append((secs, fun, entry))
        return entry


class FakeConsumer:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self.timer = FakeTimer()


def test_health_step_lifecycle(tmp_path: Path) -> None:
    hb, ready = tmp_path / "hb", tmp_path / "ready"
    hb.touch()
    ready.touch()
    consumer = FakeConsumer(build_app({**HOSTS_ENV, "HEALTH_HEARTBEAT_FILE": str(hb), "HEALTH_READY_FILE": str(ready)}))
    step = HealthStep(consumer)
    assert not hb.exists(), "files from a previous container must not vouch for this one"
    assert not ready.exists(), "files from a previous container must not vouch for this one"
    step.start(consumer)
    assert hb.exists()
    assert ready.exists()
    ((secs, beat, entry),) = consumer.timer.entries
    assert secs == timing.HEALTH_HEARTBEAT_INTERVAL_S
    os.utime(hb, (0, 0))
    beat()
    assert time.time() - hb.stat().st_mtime < 5
    step.stop(consumer)
    assert entry.cancelled
    assert not ready.exists()
    step.start(consumer)
    step.shutdown(consumer)
    assert not ready.exists()


# ----------------------------------------------------------------------- idempotency


def test_idempotent_by_explicit_key() -> None:
    store = MemoryDoneStore()
    calls: list[str] = []

    @idempotent(store=lambda: store, key=kwarg_key("order"))
    def charge(amount: int, order: str) -> int:
        calls.append(order)
        return amount

    assert charge(5, order="o-1") == 5
    assert charge(5, order="o-1") is None
    assert charge(7, order="o-2") == 7
    assert calls == ["o-1", "o-2"]


def test_idempotent_does_not_mark_a_failed_run(tmp_path: Path) -> None:
    store = FileDoneStore(tmp_path)
    attempts: list[int] = []

    @idempotent(store=lambda: store, key=kwarg_key("key"))
    def flaky(key: str) -> None:
        attempts.append(len(key))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    with pytest.raises(RuntimeError):
        flaky(key="k")
    flaky(key="k")
    flaky(key="k")
    assert len(attempts) == 2
    assert store.is_done("k")


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_claimed_key_runs_in_one_delivery_at_a_time(kind: str, tmp_path: Path) -> None:
    """Two copies of one task id at once: the second finds it claimed and is not run (nor dropped)."""
    store: ClaimStore = MemoryDoneStore() if kind == "memory" else FileDoneStore(tmp_path)
    runs: list[str] = []

    @idempotent(store=lambda: store, key=kwarg_key("key"), claim=True, lease_s=60)
    def effect(key: str) -> None:
        runs.append(key)
        # A second delivery of the same key while this one runs.
        with pytest.raises(Claimed):
            effect(key=key)

    effect(key="k")
    assert runs == ["k"]
    assert store.is_done("k")
    effect(key="k")
    assert runs == ["k"], "done: a later copy is skipped"


def test_a_copy_that_finished_between_check_and_claim_is_not_run_again() -> None:
    class FinishesDuringCheck(MemoryDoneStore):
        """The other copy claims, runs, marks done and releases while this one checks."""

        def is_done(self, key: str) -> bool:
            answer = super().is_done(key)
            if not answer and not runs:
                runs.append("other")
                self.mark_done(key)
            return answer

    store = FinishesDuringCheck()
    runs: list[str] = []

    @idempotent(store=lambda: store, key=kwarg_key("key"), claim=True, lease_s=60)
    def effect(key: str) -> None:
        runs.append(key)

    effect(key="k")
    assert runs == ["other"]
    assert store.claim("k", lease_s=60), "the claim was given back"


def test_an_outage_is_timed_from_its_first_disconnection(tmp_path: Path) -> None:
    """Celery stops every consumer step on each restart: later stops must not restart the clock."""
    conf = types.SimpleNamespace(ha_heartbeat_file=str(tmp_path / "hb"), ha_ready_file=str(tmp_path / "ready"))
    parent = types.SimpleNamespace(app=types.SimpleNamespace(conf=conf))
    step = HealthStep(parent)
    marker = health.disconnected_marker(tmp_path / "hb")
    assert marker.exists(), "not consuming yet: the clock runs from the start"
    os.utime(marker, (1000.0, 1000.0))
    step.stop(parent)
    step.stop(parent)
    assert marker.stat().st_mtime == 1000.0


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_dead_claimers_lease_is_taken_over_and_a_failure_releases_it(kind: str, tmp_path: Path) -> None:
    store: ClaimStore = MemoryDoneStore() if kind == "memory" else FileDoneStore(tmp_path)
    assert store.claim("dead", lease_s=60)  # a runner that was SIGKILLed: never released
    assert not store.claim("dead", lease_s=60)
    assert store.claim("dead", lease_s=0), "the lease expired: taken over"
    attempts: list[int] = []

    @idempotent(store=lambda: store, key=kwarg_key("key"), claim=True, lease_s=60)
    def flaky(key: str) -> None:
        attempts.append(len(key))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    with pytest.raises(RuntimeError):
        flaky(key="f")
    flaky(key="f")
    assert len(attempts) == 2, "the failed run gave its claim back"


def test_claiming_needs_a_store_that_can_claim() -> None:
    class DoneOnly:
        def is_done(self, key: str) -> bool:
            return not key

        def mark_done(self, key: str) -> None:
            del key

    @idempotent(store=DoneOnly, key=kwarg_key("key"), claim=True)
    def body(key: str) -> None:
        del key

    with pytest.raises(TypeError, match="claim/release"):
        body(key="k")


# ------------------------------------------------------------------------- scheduler


def test_scheduler_task_choices_build_their_arguments() -> None:
    sleep = PLANS["sleep_ms"](3, 10)
    assert (sleep.task_name, sleep.count, sleep.arguments(2)) == (tasks.SLEEP_MS, 3, ((), {"ms": 10}))
    assert PLANS["count"](1, 10).arguments(0) == ((), {})
    assert set(PLANS) == {"count", "noop", "sleep_ms"}, "the image's scheduler offers only the image's tasks"


def test_publish_result_ok_only_when_everything_confirmed() -> None:
    assert PublishResult(2, ("a", "b"), 1.0).ok
    assert not PublishResult(2, ("a",), 1.0, "ConnectionError: gone").ok
    assert PublishResult(4, ("a", "b"), 0.5).rate == 4.0


def test_scheduler_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduler_main(["--count", "1"], {"BROKER_HOSTS": "a"}) == 2
    assert "BROKER_USER" in capsys.readouterr().err


def test_scheduler_rejects_zero_count() -> None:
    with pytest.raises(SystemExit) as info:
        scheduler_main(["--count", "0"], HOSTS_ENV)
    assert info.value.code == 2


def fake_publisher(fail_after: int | None = None) -> Publisher:
    def publish(app: Celery, plan: PublishPlan, on_progress: ProgressCallback) -> PublishResult:
        del app
        ids: list[str] = []
        for index in range(plan.count):
            if fail_after is not None and index == fail_after:
                return PublishResult(plan.count, tuple(ids), 0.5, "MessageNacked: nacked")
            ids.append(f"id-{index}")
            on_progress(len(ids))
        return PublishResult(plan.count, tuple(ids), 0.5)

    return publish


@pytest.mark.parametrize("interactive", [True, False])
def test_progress_reporting(interactive: bool, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_with_progress(build_app(), PublishPlan(tasks.NOOP, 5), fake_publisher(), interactive=interactive)
    assert result.ok
    if not interactive:
        assert "published 5/5" in capsys.readouterr().out


def test_scheduler_cli_reports_rate_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduler_main(["--count", "3", "--task", "noop"], HOSTS_ENV, publisher=fake_publisher()) == 0
    out = capsys.readouterr()
    assert "ok: 3/3 confirmed" in out.out
    assert "tasks/s" in out.out
    assert "p%40ss" not in out.out, "the password must not be printed"
    assert scheduler_main(["--count", "3"], HOSTS_ENV, publisher=fake_publisher(fail_after=1)) == 1
    assert "FAILED: 1/3 confirmed" in capsys.readouterr().err


# --------------------------------------------------------------------------- metrics


def test_metrics_port_and_directory_from_env() -> None:
    default = from_env(HOSTS_ENV)
    assert (default.metrics_port, default.metrics_dir) == (metrics.WORKER_METRICS_PORT, None)
    config = from_env({**HOSTS_ENV, metrics.ENV_METRICS_PORT: "0", metrics.ENV_MULTIPROC_DIR: "/tmp/m"})
    assert (config.metrics_port, str(config.metrics_dir)) == (0, "/tmp/m")
    with pytest.raises(ConfigError, match=r"WORKER_METRICS_PORT='70000' is out of range; allowed: 0\.\.65535"):
        from_env({**HOSTS_ENV, metrics.ENV_METRICS_PORT: "70000"})
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR='metrics' is not an absolute path"):
        from_env({**HOSTS_ENV, metrics.ENV_MULTIPROC_DIR: "metrics"})


def test_a_prefork_worker_without_a_multiprocess_directory_refuses_to_export(tmp_path: Path) -> None:
    """Its pool processes run the tasks: counters kept in the main process alone would miss every outcome."""
    from celery.concurrency.prefork import TaskPool

    conf = types.SimpleNamespace(ha_metrics_port=1, ha_metrics_dir=None, ha_heartbeat_file=str(tmp_path / "hb"))
    parent = types.SimpleNamespace(
        app=types.SimpleNamespace(conf=conf), controller=types.SimpleNamespace(pool_cls=TaskPool)
    )
    with pytest.raises(MetricsConfigError, match="needs PROMETHEUS_MULTIPROC_DIR"):
        MetricsStep(parent)
    conf.ha_metrics_port = 0
    assert MetricsStep(parent).metrics is None, "port 0: no exporter, nothing to refuse"


def test_health_and_metrics_steps_start_once_the_consumer_consumes() -> None:
    """After Tasks and Control: a restart that fails in remote control (its queue still locked by a dead
    node's connection) must neither flap the ready file nor count as a reconnect."""
    blueprint = Consumer.Blueprint(steps=build_app().steps["consumer"])
    order = [step.name.rsplit(".", 1)[1] for step in blueprint._finalize_steps(blueprint.claim_steps())]
    for step in ("HealthStep", "MetricsStep"):
        assert order.index(step) > max(order.index("Tasks"), order.index("Control")), order
    assert order.index("MetricsStep") > order.index("HealthStep"), order
