"""The broker's users per role: what each may configure, write and read, and how they get created.

RabbitMQ checks three permissions per resource (exchange or queue) of a vhost, each a regex over
the resource's name: ``configure`` (declare, delete), ``write`` (publish to an exchange, bind a
queue or exchange as destination) and ``read`` (consume or get from a queue, purge it, bind from
an exchange as source). Each role gets exactly the names its own code touches, found by running
it against a user with these permissions on RabbitMQ 4.3 (tests/drills/dev_plan/test_broker_users.py
and every drill, which boot the plan with them):

worker
    Declares every lane's task queue and its topic exchange (``celery``, ``celery.<lane>``:
    contract.lanes; a worker declares them all, and may publish a task to any lane), Celery's delayed-delivery
    topology (``celery_delayed_*``: every level's exchange and quorum queue, with a dead-letter
    exchange argument, which RabbitMQ checks as *write* on that exchange), and its remote-control
    objects: the ``celery.pidbox`` fanout exchange, its own exclusive ``<hostname>.celery.pidbox``
    queue, and the ``reply.celery.pidbox`` exchange it answers ``celery inspect`` on.
    ``python -m app.dlq`` runs in a worker pod with the worker's environment: it reads
    ``celery.dlq`` and publishes its copies through the default exchange (``amq.default``).
    Not: configure on ``celery.dlq``/``celery.dlx`` (so no deleting or purging-by-redeclare of
    the dead letters; both come from the definitions), no management tag.
scheduler
    Declares the lanes' task queues, their exchanges and bindings on every new channel before
    publishing (``app.publish``, and Celery's own ``send_task`` for ``.delay()``), publishes to
    them and, for countdown/eta tasks, to the first delayed level (``celery_delayed_27``).
    The binding takes *read* on the exchange ``celery``, and RabbitMQ's permissions match names
    only, not kinds: so the scheduler may also read (and, by configure, delete) the queue
    ``celery``. Closing that needs publishers that declare nothing (or only passively) and
    trust the definitions for the route; everything else (the DLQ, the DLX, the delayed levels,
    any other name) stays out of its reach.
monitoring
    The ``monitoring`` tag (the management API's read-only view of every object, what KEDA's
    rabbitmq trigger reads) and access to the vhost with no AMQP permission at all.

The operators' administrator is the default user (``contract.wire.BROKER_USERNAME``, seeded on a
blank node from ``30-default-user.conf``); no workload mounts its Secret.

Why the postStart hook, not the definitions file: a boot-time definitions file suppresses the
default user (see broker.render), and users in definitions carry their passwords, secret material
that must not go into a ConfigMap. The hook builds a second, users-only definitions document from
the Secret-mounted password files, after the definitions import, on every broker start, and
imports it in one call from stdin (``rabbitmqctl import_definitions`` with no file): RabbitMQ's
``put_user`` creates a missing user or sets an existing one's password and tags again, and every
permission is re-applied from this module. So a replaced password Secret takes effect when the
pods roll, and no password is ever a command-line argument. One call, not one per user and
setting: every ``rabbitmqctl`` call starts an Erlang VM, and a restarted broker is not Ready
until the hook returns (7 calls took 12-23 s on the loaded 2-core dev machine).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass

from contract.wire import (
    DEAD_LETTER_QUEUE,
    DEFAULT_BROKER_VHOST,
    DELAYED_DELIVERY_EXCHANGE,
    DELAYED_LEVELS,
    QUEUE_NAME,
    ROLE_PASSWORDS_DIR,
    BrokerRole,
    delayed_level,
    role_username,
)

NOTHING = "^$"
"""A permission regex that matches no resource a client can name (the default exchange is
``amq.default`` to the permission check)."""


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str

    def allows(self, kind: str, name: str) -> bool:
        """Whether this grants ``kind`` (configure, write, read) on the resource ``name``."""
        return re.search(getattr(self, kind), name) is not None


@dataclass(frozen=True)
class RoleUser:
    role: BrokerRole
    username: str
    tags: tuple[str, ...]
    permissions: Permissions


def _names(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


_DELAYED = re.escape(DELAYED_DELIVERY_EXCHANGE.removesuffix("delivery")) + r"(delivery|[0-9]+)"
_PIDBOX = re.escape(f"{QUEUE_NAME}.pidbox")
_REPLY = re.escape(f"reply.{QUEUE_NAME}.pidbox")
_OWN_PIDBOX = r".+\." + _PIDBOX


def role_users(task_queues: tuple[str, ...] = (QUEUE_NAME,)) -> tuple[RoleUser, ...]:
    """Every role's user, in creation order, for the lanes' ``task_queues`` (each a queue and its exchange)."""
    tasks = "|".join(re.escape(queue) for queue in task_queues)
    worker_configure = (tasks, _DELAYED, _PIDBOX, _OWN_PIDBOX, _REPLY)
    return (
        RoleUser(
            BrokerRole.WORKER,
            role_username(BrokerRole.WORKER),
            (),
            Permissions(
                configure=_names(*worker_configure),
                write=_names(*worker_configure, re.escape("amq.default")),
                read=_names(tasks, _DELAYED, _PIDBOX, _OWN_PIDBOX, re.escape(DEAD_LETTER_QUEUE)),
            ),
        ),
        RoleUser(
            BrokerRole.SCHEDULER,
            role_username(BrokerRole.SCHEDULER),
            (),
            Permissions(
                configure=_names(tasks),
                write=_names(tasks, re.escape(delayed_level(DELAYED_LEVELS - 1))),
                read=_names(tasks),
            ),
        ),
        RoleUser(
            BrokerRole.MONITORING,
            role_username(BrokerRole.MONITORING),
            ("monitoring",),
            Permissions(NOTHING, NOTHING, NOTHING),
        ),
    )


def role_user(role: BrokerRole) -> RoleUser:
    return next(u for u in role_users() if u.role is role)


def password_file(username: str, directory: str = ROLE_PASSWORDS_DIR) -> str:
    """Where a broker pod finds ``username``'s password (a Secret's ``password`` key)."""
    return f"{directory}/{username}"


_PASSWORD_SLOT = "@password@"
"""Where a password goes in the users document (no user name or permission contains it)."""
_JSON_ESCAPED = r"""sed 's/[\\"]/\\&/g'"""
"""A file's text with JSON's two string specials escaped (backslash and double quote)."""


def users_script(
    task_queues: tuple[str, ...] = (QUEUE_NAME,), vhost: str = DEFAULT_BROKER_VHOST, directory: str = ROLE_PASSWORDS_DIR
) -> str:
    """Shell lines that create or update every role's user from its password file, in one import.

    Meant for :func:`broker.render.post_start_script`'s ``then``: it runs after the node has
    booted and uses that script's ``$deadline``. The import is retried as a whole until the
    deadline (a peer may be restarting; three pods run it at once on a fresh cluster, so one
    creation can lose the race, and the next round takes the update path).
    """
    # The document is static JSON but for the passwords, each spliced in from its file with
    # JSON's two specials escaped (the generated passwords are alphanumeric; a pasted one may not be).
    users = role_users(task_queues)
    doc = json.dumps(
        {
            "users": [{"name": u.username, "password": _PASSWORD_SLOT, "tags": list(u.tags)} for u in users],
            "permissions": [{"user": u.username, "vhost": vhost, **dataclasses.asdict(u.permissions)} for u in users],
        },
        separators=(",", ":"),
    )
    parts = doc.split(_PASSWORD_SLOT)
    files = [shlex.quote(password_file(u.username, directory)) for u in users]
    spliced = "".join(
        shlex.quote(part) + (f'"$({_JSON_ESCAPED} {path})"' if path else "")
        for part, path in zip(parts, [*files, ""], strict=True)
    )
    return (
        f"until printf '%s' {spliced} | rabbitmqctl import_definitions >/dev/null; do\n"
        '  [ "$(date +%s)" -lt "$deadline" ] || { echo "role users not set up in time" >&2; exit 1; }\n'
        "  sleep 2\n"
        "done\n"
    )
