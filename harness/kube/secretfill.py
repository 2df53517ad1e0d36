"""Replace the plan's masked secret values (``[secret]``) with fresh local ones.

A generator is called per (secret name, key) with a ``lookup`` that returns any other key's final
value, so derived keys (``default_user.conf`` from username and password) are built from the same
values the other consumers see. ``lookup`` memoises and detects cycles. A masked key that the
generator has no rule for (it returns None) is refused with the secret and key named.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets as stdlib_secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.render import render_default_user_conf
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


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ha-celery"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class LocalCa:
    """A throwaway CA and broker node certificates made as components/rabbitmq/tls.py makes them with
    pulumi-tls: ECDSA P-256, a CA certificate, one server certificate per node whose names are
    contract.wire.broker_tls_names (the pod's StatefulSet DNS name, which the harness's pods
    resolve as GKE's would, and the client Service's names). Generated on first use."""

    VALIDITY = dt.timedelta(days=7)
    """Local runs are short; a week keeps a long drill series well inside it."""

    def __init__(self, cluster_name: str = "ha-celery-local") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._subject = _name(f"{cluster_name} broker CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self._subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def server_pair(self, dns_names: list[str]) -> tuple[str, str]:
        """(certificate PEM, private key PEM) for a server known by ``dns_names`` (the first is its CN)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + self.VALIDITY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def _pick(pair: Callable[[int], tuple[str, str]], ordinal: int, index: int) -> SecretRule:
    return lambda _: pair(ordinal)[index]


def ha_celery_rules(
    rng: random.Random | None = None,
    *,
    broker_nodes: int = 3,
    app: str = "rabbitmq",
    workers: str = "celery-worker",
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
    tls_secret, ca_secret = child_name(app, TLS_SECRET), child_name(app, CA_SECRET)

    @cache
    def local_ca() -> LocalCa:
        return LocalCa()

    @cache
    def node_pair(ordinal: int) -> tuple[str, str]:
        return local_ca().server_pair(broker_tls_names(app, child_name(app, NODES_SERVICE), namespace, ordinal))

    tls_rules: dict[tuple[str, str], SecretRule] = {
        (tls_secret, TLS_CA_KEY): lambda _: local_ca().cert_pem,
        # The clients' CA is the broker's: the same value, looked up.
        (ca_secret, TLS_CA_KEY): lambda lookup: lookup(tls_secret, TLS_CA_KEY),
    }
    for i in range(broker_nodes):
        pod = f"{app}-{i}"
        tls_rules[(tls_secret, tls_cert_key(pod))] = _pick(node_pair, i, 0)
        tls_rules[(tls_secret, tls_private_key_key(pod))] = _pick(node_pair, i, 1)

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
        # autoscaling=keda only: what KEDA's rabbitmq trigger reads the queue length with.
        (child_name(workers, KEDA_RABBITMQ_SECRET), "host"): keda_host,
        # brokerTls only.
        **tls_rules,
    }
