"""The Secret-fill rules of this project's plans: which masked value of which Secret the pod
runner fills, and how (``harness.kube.secretfill`` is the generic mechanism; these rules are
handed to ``KubeCluster(..., secret_rules=plan_secret_rules)``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import cache

from broker.render import render_default_user_conf
from contract.lanes import DEFAULT_LANE, LONG_LANE, deployment_name
from contract.wire import (
    BROKER_USERNAME,
    CA_SECRET,
    DEFAULT_USER_SECRET,
    ERLANG_COOKIE_SECRET,
    KEDA_RABBITMQ_SECRET,
    NODES_SERVICE,
    TLS_CA_KEY,
    TLS_SECRET,
    BrokerRole,
    broker_tls_names,
    child_name,
    management_url,
    role_secret_name,
    role_username,
    tls_cert_key,
    tls_private_key_key,
)
from harness.kube.objects import Plan
from harness.kube.secretfill import LocalCa, Lookup, SecretRule, random_alnum


def plan_secret_rules(plan: Plan, rng: random.Random) -> dict[tuple[str, str], SecretRule]:
    """The pod runner's ``secret_rules`` for a plan of this project: one TLS pair per broker pod
    (the largest StatefulSet's replicas), random values from the runner's ``rng``."""
    brokers = max((s.replicas for s in plan.statefulsets), default=0)
    return ha_celery_rules(rng, broker_nodes=brokers)


def _constant(value: str) -> SecretRule:
    return lambda _: value


def _pick(pair: Callable[[int], tuple[str, str]], ordinal: int, index: int) -> SecretRule:
    return lambda _: pair(ordinal)[index]


def tls_rules(app: str, namespace: str, broker_nodes: int) -> dict[tuple[str, str], SecretRule]:
    """brokerTls only: one local CA (components/rabbitmq/tls.py's pulumi-tls CA), a certificate and
    key per broker pod, and the clients' copy of the CA."""
    tls_secret, ca_secret = child_name(app, TLS_SECRET), child_name(app, CA_SECRET)

    @cache
    def local_ca() -> LocalCa:
        return LocalCa()

    @cache
    def node_pair(ordinal: int) -> tuple[str, str]:
        return local_ca().server_pair(broker_tls_names(app, child_name(app, NODES_SERVICE), namespace, ordinal))

    rules: dict[tuple[str, str], SecretRule] = {
        (tls_secret, TLS_CA_KEY): lambda _: local_ca().cert_pem,
        # The clients' CA is the broker's: the same value, looked up.
        (ca_secret, TLS_CA_KEY): lambda lookup: lookup(tls_secret, TLS_CA_KEY),
    }
    for i in range(broker_nodes):
        pod = f"{app}-{i}"
        rules[(tls_secret, tls_cert_key(pod))] = _pick(node_pair, i, 0)
        rules[(tls_secret, tls_private_key_key(pod))] = _pick(node_pair, i, 1)
    return rules


def ha_celery_rules(
    rng: random.Random | None = None,
    *,
    broker_nodes: int = 3,
    app: str = "rabbitmq",
    workers: Sequence[str] = (deployment_name(DEFAULT_LANE), deployment_name(LONG_LANE)),
    namespace: str = "ha-celery",
    # Not secret, but the plan masks the whole stringData of a Secret that holds any secret value.
    username: str = BROKER_USERNAME,
) -> dict[tuple[str, str], SecretRule]:
    """The rules that rebuild ha-celery's Secrets the way components/rabbitmq/ and workers.py do
    (the names from contract.wire.child_name, as the components take them).

    ``broker_nodes``: the broker StatefulSet's replicas, one certificate and key each (with TLS).
    """
    user = child_name(app, DEFAULT_USER_SECRET)
    monitoring = role_secret_name(app, BrokerRole.MONITORING)

    def keda_host(lookup: Lookup) -> str:
        # components/rabbitmq/secrets.py monitoring_url: the monitoring user, through the client Service.
        return management_url(lookup(monitoring, "username"), lookup(monitoring, "password"), app, namespace)

    roles: dict[tuple[str, str], SecretRule] = {}
    for role in BrokerRole:
        # components/rabbitmq/secrets.py role_secrets: one per role, same password shape as the default user's.
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
        (child_name(app, ERLANG_COOKIE_SECRET), ".erlang.cookie"): lambda _: random_alnum(64, rng),
        # autoscaling=keda only: what KEDA's rabbitmq trigger reads each lane's queue length with.
        **{(child_name(lane, KEDA_RABBITMQ_SECRET), "host"): keda_host for lane in workers},
        **tls_rules(app, namespace, broker_nodes),
    }
