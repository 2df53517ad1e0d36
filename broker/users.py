"""The broker's users per role: what each may configure, write and read, and how they get created.

RabbitMQ checks three permissions per resource (exchange or queue) of a vhost, each a regex over
the resource's name: ``configure`` (declare, delete), ``write`` (publish to an exchange, bind a
queue or exchange as destination) and ``read`` (consume or get from a queue, purge it, bind from
an exchange as source). Each role gets exactly the names its own code touches, found by running
it against a user with these permissions on RabbitMQ 4.3 (tests/drills/dev_plan/test_broker_users.py
and every drill, which boot the plan with them):

worker
    Declares the task queue and its topic exchange (``celery``), Celery's delayed-delivery
    topology (``celery_delayed_*``: every level's exchange and quorum queue, with a dead-letter
    exchange argument, which RabbitMQ checks as *write* on that exchange), and its remote-control
    objects: the ``celery.pidbox`` fanout exchange, its own exclusive ``<hostname>.celery.pidbox``
    queue, and the ``reply.celery.pidbox`` exchange it answers ``celery inspect`` on.
    ``python -m app.dlq`` runs in a worker pod with the worker's environment: it reads
    ``celery.dlq`` and publishes its copies through the default exchange (``amq.default``).
    Not: configure on ``celery.dlq``/``celery.dlx`` (so no deleting or purging-by-redeclare of
    the dead letters; both come from the definitions), no management tag.
scheduler
    Declares the task queue, its exchange and their binding on every new channel before
    publishing (``app.publish``, and Celery's own ``send_task`` for ``.delay()``), publishes to
    ``celery`` and, for countdown/eta tasks, to the first delayed level (``celery_delayed_27``).
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

Why rabbitmqctl in the postStart hook, not definitions: a boot-time definitions file suppresses
the default user (see broker.render), and definitions with users carry password hashes, secret
material that must not go into a ConfigMap. The hook reads each password from a Secret-mounted
file, after the definitions import, on every broker start: an existing user gets the Secret's
password again (``change_password``, where it is an argument, inside the broker container whose
Erlang cookie already grants full control), so a replaced password Secret takes effect when the
pods roll; a new user is created with ``add_user`` reading the password from stdin; the
monitoring tag and every permission are re-applied from this module.
"""

from __future__ import annotations

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


_TASK = re.escape(QUEUE_NAME)
_DELAYED = re.escape(DELAYED_DELIVERY_EXCHANGE.removesuffix("delivery")) + r"(delivery|[0-9]+)"
_PIDBOX = re.escape(f"{QUEUE_NAME}.pidbox")
_REPLY = re.escape(f"reply.{QUEUE_NAME}.pidbox")
_OWN_PIDBOX = r".+\." + _PIDBOX


def role_users() -> tuple[RoleUser, ...]:
    """Every role's user, in creation order."""
    worker_configure = (_TASK, _DELAYED, _PIDBOX, _OWN_PIDBOX, _REPLY)
    return (
        RoleUser(
            BrokerRole.WORKER,
            role_username(BrokerRole.WORKER),
            (),
            Permissions(
                configure=_names(*worker_configure),
                write=_names(*worker_configure, re.escape("amq.default")),
                read=_names(_TASK, _DELAYED, _PIDBOX, _OWN_PIDBOX, re.escape(DEAD_LETTER_QUEUE)),
            ),
        ),
        RoleUser(
            BrokerRole.SCHEDULER,
            role_username(BrokerRole.SCHEDULER),
            (),
            Permissions(
                configure=_names(_TASK),
                write=_names(_TASK, re.escape(delayed_level(DELAYED_LEVELS - 1))),
                read=_names(_TASK),
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


def users_script(vhost: str = DEFAULT_BROKER_VHOST, directory: str = ROLE_PASSWORDS_DIR) -> str:
    """Shell lines that create or update every role's user from its password file.

    Meant for :func:`broker.render.post_start_script`'s ``then``: it runs after the node has
    booted and uses that script's ``$deadline``. Each user is retried as a whole until the
    deadline (a peer may be restarting; three pods run it at once on a fresh cluster, so
    ``add_user`` can lose the race, and the next round takes the update path).
    """
    lines: list[str] = []
    for user in role_users():
        name, path = shlex.quote(user.username), shlex.quote(password_file(user.username, directory))
        p = user.permissions
        # Every rabbitmqctl call starts an Erlang VM (seconds on a busy node, and this runs on
        # every broker start): the common case first, an existing user, so a restart costs one
        # call for the password and one for the permissions. Not -q on add_user: with it, 4.3's
        # rabbitmqctl crashes reading the password from stdin (exit 70).
        steps = [
            f'{{ rabbitmqctl -q change_password {name} "$(cat {path})" 2>/dev/null'
            f" || rabbitmqctl add_user {name} < {path} >/dev/null; }}",
            *([f"rabbitmqctl -q set_user_tags {name} {' '.join(user.tags)}"] if user.tags else []),
            "rabbitmqctl -q set_permissions -p "
            + " ".join(shlex.quote(v) for v in (vhost, user.username, p.configure, p.write, p.read)),
        ]
        lines += [
            f"until {' && '.join(steps)}; do",
            f'  [ "$(date +%s)" -lt "$deadline" ] || {{ echo "user {user.username} not set up in time" >&2; exit 1; }}',
            "  sleep 2",
            "done",
        ]
    return "\n".join(lines) + "\n"
