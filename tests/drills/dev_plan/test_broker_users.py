"""The per-role broker users on the dev plan booted for real (RabbitMQ 4.3.6, users created by the
broker pods' own postStart hook from the plan's Secrets).

The worker pods already run as the worker user, so every other test and drill on the booted plan
exercises its permissions; here each role is also held to what it must *not* do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import amqp
import pytest
from amqp.exceptions import AccessRefused

from app.config import from_env
from app.dlq import dead_letter_channel, list_dead
from app.factory import make_app
from broker.users import users_script
from contract import wire
from contract.wire import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, MANAGEMENT_PORT, QUEUE_NAME, BrokerRole
from drill import failing, records
from drill import tasks as drill_tasks
from drill.pod_scenarios import BROKERS
from drill.targets import broker_urls
from harness.runtime.poll import poll
from tests.drills.conftest import Booted, python_in_pod_namespace

pytestmark = [pytest.mark.drill]


def login(booted: Booted, role: BrokerRole) -> tuple[str, str, str]:
    """(host, user, password) of ``role`` on the first broker pod, from the plan's Secret."""
    parts = urlsplit(broker_urls(booted.target.cluster, role)[0])
    assert parts.hostname
    assert parts.username
    assert parts.password
    return parts.hostname, unquote(parts.username), unquote(parts.password)


@contextmanager
def connection(booted: Booted, role: BrokerRole) -> Iterator[amqp.Connection]:
    host, user, password = login(booted, role)
    conn = amqp.Connection(f"{host}:{wire.AMQP_PORT}", userid=user, password=password, connect_timeout=10)
    conn.connect()
    try:
        yield conn
    finally:
        conn.collect()


def refused(conn: amqp.Connection, action: str) -> bool:
    """Whether the broker refuses ``action`` on a fresh channel (403 ACCESS_REFUSED closes it)."""
    channel = conn.channel()
    try:
        if action == "delete the DLQ":
            channel.queue_delete(DEAD_LETTER_QUEUE)
        elif action == "delete the DLX":
            channel.exchange_delete(DEAD_LETTER_EXCHANGE)
        elif action == "declare another queue":
            channel.queue_declare("not-ours", durable=True, auto_delete=False)
        elif action == "consume the task queue":
            channel.basic_get(QUEUE_NAME)
        elif action == "read the DLQ":
            channel.basic_get(DEAD_LETTER_QUEUE)
        elif action == "publish a task":
            channel.confirm_select()
            # Routed nowhere (no binding matches): the write permission is checked all the same.
            channel.basic_publish_confirm(amqp.Message(b"{}"), exchange=QUEUE_NAME, routing_key="not-routed")
        else:
            raise AssertionError(f"unknown action {action!r}")
    except AccessRefused:
        return True
    channel.close()
    return False


_GET = """
import base64, sys, urllib.error, urllib.request
url, user, password = sys.argv[1:]
request = urllib.request.Request(url)
request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, b""
sys.stdout.write(f"{status}\\n{body.decode()}")
"""


def management_status(booted: Booted, role: BrokerRole, path: str) -> tuple[int, bytes]:
    """An HTTP GET of the management API as ``role``, the way an operator reaches it: ``kubectl
    port-forward``, which enters the broker pod's own network namespace, so no NetworkPolicy stands
    in the way (the plan lets only ops pods and KEDA in; test_network_policy.py checks that)."""
    host, user, password = login(booted, role)
    pod = next(p for p in booted.target.cluster.pods_of(BROKERS) if p.ip == host)
    done = python_in_pod_namespace(pod, _GET, f"http://{host}:{MANAGEMENT_PORT}{path}", user, password)
    assert done.returncode == 0, done.stderr[-800:]
    status, _, body = done.stdout.partition("\n")
    return int(status), body.encode()


def test_the_roles_have_their_users_and_no_workload_logs_in_as_the_administrator(booted: Booted) -> None:
    cluster = booted.target.cluster
    broker = cluster.pods_of(BROKERS)[0].name
    users = dict(
        line.split("\t", 1)
        for line in cluster.exec(broker, "rabbitmqctl", "-q", "list_users", "--no-table-headers").splitlines()
    )
    assert users == {
        wire.BROKER_USERNAME: "[administrator]",
        wire.role_username(BrokerRole.WORKER): "[]",
        wire.role_username(BrokerRole.SCHEDULER): "[]",
        wire.role_username(BrokerRole.MONITORING): "[monitoring]",
    }
    connected = cluster.exec(broker, "rabbitmqctl", "-q", "list_connections", "user", "--no-table-headers").split()
    assert wire.role_username(BrokerRole.WORKER) in connected, connected
    assert wire.BROKER_USERNAME not in connected, f"a client logged in as the administrator: {connected}"


def test_the_worker_user_runs_the_whole_task_path(fresh: Booted) -> None:
    """Publish (as a task that publishes would), consume, a countdown through the delayed levels,
    a failing task dead-lettered and listed by app.dlq: all as the worker user."""
    app = make_app(from_env({wire.ENV_BROKER_URLS: ",".join(broker_urls(fresh.target.cluster, BrokerRole.WORKER))}))
    try:
        now = app.send_task(drill_tasks.RECORD, args=(0,)).id
        later = app.send_task(drill_tasks.RECORD, args=(1,), countdown=2).id
        failed = app.send_task(failing.FAIL, args=(0,)).id
    finally:
        app.close()
    poll(lambda: records.tally(fresh.results).distinct == 2, 60, "both record tasks to run")
    done = records.tally(fresh.results)
    assert set(done.per_task) == {now, later}
    assert done.early == 0

    def dead() -> set[str | None]:
        with dead_letter_channel(broker_urls(fresh.target.cluster, BrokerRole.WORKER)) as channel:
            return {t.task_id for t in list_dead(channel)}

    poll(lambda: failed in dead(), 60, f"{failing.FAIL} in {DEAD_LETTER_QUEUE}")


@pytest.mark.parametrize("action", ["delete the DLQ", "delete the DLX", "declare another queue"])
def test_the_worker_user_cannot_touch_what_is_not_its_own(booted: Booted, action: str) -> None:
    with connection(booted, BrokerRole.WORKER) as conn:
        assert refused(conn, action), f"the worker user may {action}"
    # Still there: the refusal is the broker's, not a missing object.
    with connection(booted, BrokerRole.WORKER) as conn:
        conn.channel().queue_declare(DEAD_LETTER_QUEUE, passive=True)


@pytest.mark.parametrize("action", ["read the DLQ", "delete the DLQ", "delete the DLX", "declare another queue"])
def test_the_scheduler_user_publishes_and_declares_its_route_only(booted: Booted, action: str) -> None:
    # Not refused: reading the task queue. Celery declares the queue and binds it before publishing,
    # which takes read on the exchange `celery`, and a permission regex cannot tell it from the
    # queue of the same name (see broker.users).
    with connection(booted, BrokerRole.SCHEDULER) as conn:
        assert refused(conn, action), f"the scheduler user may {action}"
        assert not refused(conn, "publish a task"), "the scheduler user cannot publish"


@pytest.mark.parametrize("role", [BrokerRole.WORKER, BrokerRole.SCHEDULER])
def test_the_clients_cannot_reach_the_management_api(booted: Booted, role: BrokerRole) -> None:
    status, _ = management_status(booted, role, "/api/overview")
    assert status == 401, f"{role} user got HTTP {status} from the management API"


def test_the_monitoring_user_reads_the_management_api_and_cannot_publish(booted: Booted) -> None:
    # What KEDA's rabbitmq trigger (protocol http) reads.
    status, body = management_status(booted, BrokerRole.MONITORING, f"/api/queues/%2F/{QUEUE_NAME}")
    assert status == 200, f"monitoring user: HTTP {status}"
    queue = json.loads(body)
    assert queue["name"] == QUEUE_NAME
    assert "messages" in queue, sorted(queue)
    with connection(booted, BrokerRole.MONITORING) as conn:
        for action in ("publish a task", "consume the task queue", "read the DLQ", "delete the DLQ"):
            assert refused(conn, action), f"the monitoring user may {action}"


def test_the_hooks_import_sets_a_rotated_password_on_an_existing_user_and_back(booted: Booted) -> None:
    """The postStart hook's users import run again, as a broker pod rolled after a password rotation
    runs it: the existing user's password becomes the new one (RabbitMQ's put_user update path), the
    old one stops working; then the Secret's own password again, as the other tests expect it."""
    cluster = booted.target.cluster
    broker = cluster.pods_of(BROKERS)[0].name
    user = wire.role_username(BrokerRole.SCHEDULER)
    _, _, old = login(booted, BrokerRole.SCHEDULER)
    rotated = "/var/lib/rabbitmq/rotated"  # writable (an emptyDir) and outside the read-only Secret mount

    # The plan's lanes: the hook re-grants every lane's queue (a hook for `celery` alone would take
    # the long lane's workers' permissions away).
    [queues] = {
        e.value
        for d in cluster.plan.deployments
        for e in d.template.spec.containers[0].env
        if e.name == wire.ENV_TASK_QUEUES
    }
    assert queues is not None

    def run_hook(directory: str) -> None:
        script = users_script(tuple(queues.split(",")), directory=directory)
        cluster.exec(broker, "sh", "-c", "deadline=$(( $(date +%s) + 60 ))\n" + script)

    def authenticates(password: str) -> bool:
        argv = ["sh", "-c", 'rabbitmqctl -q authenticate_user "$1" "$2" >/dev/null 2>&1 && echo yes || echo no']
        return cluster.exec(broker, *argv, "-", user, password).strip() == "yes"

    new = "rotated-" + old[::-1]
    cluster.exec(
        broker,
        "sh",
        "-c",
        f'mkdir -p {rotated} && cp {wire.ROLE_PASSWORDS_DIR}/* {rotated}/ && printf %s "$1" > {rotated}/{user}',
        "-",
        new,
    )
    try:
        run_hook(rotated)
        assert (authenticates(new), authenticates(old)) == (True, False)
    finally:
        run_hook(wire.ROLE_PASSWORDS_DIR)
        cluster.exec(broker, "rm", "-rf", rotated)
    assert (authenticates(old), authenticates(new)) == (True, False)
