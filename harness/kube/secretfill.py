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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.kube.objects import Plan, Secret

Lookup = Callable[[str, str], str]
"""(secret name, key) -> its final value."""
Generator = Callable[[str, str, Lookup], "str | None"]
"""(secret name, key, lookup) -> a value for a masked key, or None when there is no rule."""
SecretRule = Callable[[Lookup], str]
SecretRules = Callable[[Plan, random.Random], Mapping[tuple[str, str], SecretRule]]
"""(plan, rng) -> the rules for its masked keys: what a project hands the pod runner (``KubeCluster``'s
``secret_rules``); this module knows no project's Secrets."""


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

    def server_pair(self, dns_names: list[str], valid_for: dt.timedelta | None = None) -> tuple[str, str]:
        """(certificate PEM, private key PEM) for a server known by ``dns_names`` (the first is its CN),
        valid from 5 minutes ago for ``valid_for`` from now (default :attr:`VALIDITY`; negative: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + (self.VALIDITY if valid_for is None else valid_for))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)
