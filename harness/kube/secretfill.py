"""Replace the plan's masked secret values (``[secret]``) with fresh local ones.

A generator is called per (secret name, key) with a ``lookup`` that returns any other key's final
value, so derived keys (``default_user.conf`` from username and password) are built from the same
values the other consumers see. ``lookup`` memoises and detects cycles. A masked key that the
generator has no rule for (it returns None) is refused with the secret and key named.
"""

from __future__ import annotations

import random
import secrets as stdlib_secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import replace

from broker.render import render_default_user_conf
from contract.wire import BROKER_USERNAME, BrokerRole, management_url, role_secret_name, role_username
from harness.kube.objects import Plan, Secret

Lookup = Callable[[str, str], str]
"""(secret name, key) -> its final value."""
Generator = Callable[[str, str, Lookup], "str | None"]
"""(secret name, key, lookup) -> a value for a masked key, or None when there is no rule."""
SecretRule = Callable[[Lookup], str]


class SecretFillError(ValueError):
    """A masked value has no rule, a rule refers to a missing key, or rules refer to each other in a cycle."""


def fill_secrets(plan: Plan, generator: Generator) -> Plan:
    """A copy of ``plan`` whose Secrets carry no masked value; raises SecretFillError otherwise."""
    by_name = {s.name: s for s in plan.secrets}
    done: dict[tuple[str, str], str] = {}
    active: list[tuple[str, str]] = []

    def lookup(name: str, key: str) -> str:
        ref = (name, key)
        if ref in done:
            return done[ref]
        secret = by_name.get(name)
        if secret is None or key not in secret.data:
            raise SecretFillError(f"secret {name!r} has no key {key!r}")
        if key not in secret.masked:
            return secret.data[key].decode()
        if ref in active:
            chain = " -> ".join(f"{n}/{k}" for n, k in [*active, ref])
            raise SecretFillError(f"secret rules form a cycle: {chain}")
        active.append(ref)
        try:
            value = generator(name, key, lookup)
        finally:
            active.pop()
        if value is None:
            raise SecretFillError(f"secret {name!r} key {key!r} is masked in the plan and no rule generates it")
        done[ref] = value
        return value

    filled: list[Secret] = []
    for s in plan.secrets:
        data = dict(s.data)
        for key in sorted(s.masked):
            data[key] = lookup(s.name, key).encode()
        filled.append(replace(s, data=data, masked=frozenset()))
    return replace(plan, secrets=filled)


def rules_generator(rules: Mapping[tuple[str, str], SecretRule]) -> Generator:
    """A generator from a table of rules keyed by (secret name, key)."""

    def generate(name: str, key: str, lookup: Lookup) -> str | None:
        rule = rules.get((name, key))
        return None if rule is None else rule(lookup)

    return generate


ALNUM = string.ascii_letters + string.digits
"""pulumi_random.RandomPassword(special=False): upper, lower and digits."""


def random_alnum(length: int, rng: random.Random | None = None) -> str:
    """A RandomPassword(special=False)-like value; ``rng`` makes it reproducible in tests."""
    if rng is None:
        return "".join(stdlib_secrets.choice(ALNUM) for _ in range(length))
    return "".join(rng.choice(ALNUM) for _ in range(length))


def _constant(value: str) -> SecretRule:
    return lambda _: value


def ha_celery_rules(
    rng: random.Random | None = None,
    *,
    app: str = "rabbitmq",
    workers: str = "celery-worker",
    namespace: str = "ha-celery",
    # Not secret, but the plan masks the whole stringData of a Secret that holds any secret value.
    username: str = BROKER_USERNAME,
) -> dict[tuple[str, str], SecretRule]:
    """The rules that rebuild ha-celery's Secrets the way components/rabbitmq.py and workers.py do."""
    user = f"{app}-default-user"
    monitoring = role_secret_name(app, BrokerRole.MONITORING)

    def keda_host(lookup: Lookup) -> str:
        # components/rabbitmq.py _management_url: the monitoring user, through the client Service.
        return management_url(lookup(monitoring, "username"), lookup(monitoring, "password"), app, namespace)

    roles: dict[tuple[str, str], SecretRule] = {}
    for role in BrokerRole:
        # components/rabbitmq.py _role_secrets: one per role, same password shape as the default user's.
        roles[(role_secret_name(app, role), "username")] = _constant(role_username(role))
        roles[(role_secret_name(app, role), "password")] = lambda _: random_alnum(32, rng)
    return {
        **roles,
        (user, "username"): lambda _: username,
        # length=32, special=False: the password goes into AMQP URLs and a conf file verbatim.
        (user, "password"): lambda _: random_alnum(32, rng),
        (user, "default_user.conf"): lambda lookup: render_default_user_conf(
            lookup(user, "username"), lookup(user, "password")
        ),
        # length=64, special=False.
        (f"{app}-erlang-cookie", ".erlang.cookie"): lambda _: random_alnum(64, rng),
        # autoscaling=keda only: what KEDA's rabbitmq trigger reads the queue length with.
        (f"{workers}-keda-rabbitmq", "host"): keda_host,
    }
