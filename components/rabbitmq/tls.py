"""TLS: a CA, one key and certificate per node, and the two Secrets (the broker's, the clients')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from broker.config import BrokerTls
from components.rabbitmq import meta
from contract import timing
from contract.wire import (
    CA_SECRET,
    NODES_SERVICE,
    TLS_CA_KEY,
    TLS_SECRET,
    broker_tls_names,
    child_name,
    tls_cert_key,
    tls_private_key_key,
)

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

TLS_DIR = "/etc/rabbitmq/tls"
"""The node's CA, certificate and key, copied from the TLS Secret by the init container onto a
memory-backed emptyDir (the key never lands on the node's disk)."""
TLS_SOURCE = "/etc/ha-celery/tls"
"""Where the init container reads the TLS Secret (every node's pair: only this pod's is copied)."""
BROKER_TLS = BrokerTls(
    cacertfile=f"{TLS_DIR}/{TLS_CA_KEY}", certfile=f"{TLS_DIR}/tls.crt", keyfile=f"{TLS_DIR}/tls.key"
)
CA_VALIDITY_HOURS = 10 * 365 * 24
"""The CA outlives many node certificates: replacing it means every client's CA file changes too."""
NODE_CERT_VALIDITY_HOURS = timing.NODE_CERT_VALIDITY_S // 3600
NODE_CERT_EARLY_RENEWAL_HOURS = timing.NODE_CERT_EARLY_RENEWAL_S // 3600
"""A `pulumi up` in a node certificate's last 30 days replaces the LocallySignedCert
(docs/operate-broker.md, "Rotating credentials and certificates"); the expiry alert's threshold is
held against the same window (monitoring.rules.AlertTiming.certificate_warning_s). That resource
has no fixed name, so the engine creates the new one before it deletes the old one and nothing is
replaced along with it: the TLS Secret is updated in place (the provider's enable_secret_mutable)
and the pod template's TLS checksum rolls the brokers one at a time."""
TLS_CHECKSUM_ANNOTATION = "ha-celery/tls-sha256"
"""Pod template annotation: sha256 of the certificates a pod reads at start (the public parts: a
new key comes with a new certificate), so a renewal or a new CA rolls the pods that use them."""


@dataclass(frozen=True)
class TlsMaterial:
    broker_secret: k8s.core.v1.Secret
    """The CA certificate and every node's pair: the broker's init container reads it."""
    ca_secret: k8s.core.v1.Secret
    """The CA certificate alone, for clients."""
    checksum: pulumi.Output[str]
    """TLS_CHECKSUM_ANNOTATION of the broker pods: the CA and every node certificate."""
    ca_checksum: pulumi.Output[str]
    """TLS_CHECKSUM_ANNOTATION of the client pods: the CA certificate."""
    not_after: dict[str, pulumi.Output[str]]
    """Each node certificate's end of validity (RFC 3339), by pod name: a stack output."""


def _tls_names(args: RabbitMQClusterArgs, ordinal: int) -> pulumi.Output[list[str]]:
    app, nodes_service = args.name, child_name(args.name, NODES_SERVICE)
    return pulumi.Output.from_input(args.namespace).apply(lambda ns: broker_tls_names(app, nodes_service, ns, ordinal))


def material(name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions) -> TlsMaterial:
    """A CA, one key and certificate per node, and the two Secrets: the broker's (CA, every node's
    pair) and the clients' (the CA certificate only)."""
    # ECDSA P-256: as strong as RSA-3072 for a fraction of the handshake cost; Erlang/OTP and
    # Python's ssl both take it.
    ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    ca = tls.SelfSignedCert(
        f"{name}-ca-cert",
        private_key_pem=ca_key.private_key_pem,
        is_ca_certificate=True,
        subject={"common_name": f"{args.cluster_name} broker CA", "organization": "ha-celery"},
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
        opts=child,
    )
    data: dict[str, pulumi.Input[str]] = {TLS_CA_KEY: ca.cert_pem}
    public: dict[str, pulumi.Output[str]] = {TLS_CA_KEY: ca.cert_pem}
    not_after: dict[str, pulumi.Output[str]] = {}
    for i in range(args.replicas):
        pod = f"{args.name}-{i}"
        names = _tls_names(args, i)
        key = tls.PrivateKey(f"{name}-{i}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-{i}-csr",
            private_key_pem=key.private_key_pem,
            subject={"common_name": names[0], "organization": "ha-celery"},
            dns_names=names,
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-{i}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=NODE_CERT_VALIDITY_HOURS,
            early_renewal_hours=NODE_CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        data[tls_cert_key(pod)] = public[tls_cert_key(pod)] = cert.cert_pem
        not_after[pod] = cert.validity_end_time
        # The provider marks private keys secret; stated here too, so no change of it leaks one.
        data[tls_private_key_key(pod)] = pulumi.Output.secret(key.private_key_pem)
    broker_secret = k8s.core.v1.Secret(
        f"{name}-tls",
        metadata=meta.metadata(child_name(args.name, TLS_SECRET), args),
        type="Opaque",
        string_data=data,
        opts=child,
    )
    ca_cert: pulumi.Output[str] = pulumi.Output.secret(ca.cert_pem)
    # Secret, not ConfigMap, although a CA certificate is public: the local harness generates its
    # own CA for masked values only, and clients must get the CA that signed the nodes' pairs.
    ca_secret = k8s.core.v1.Secret(
        f"{name}-ca",
        metadata=meta.metadata(child_name(args.name, CA_SECRET), args),
        type="Opaque",
        string_data={TLS_CA_KEY: ca_cert},
        opts=child,
    )
    return TlsMaterial(
        broker_secret,
        ca_secret,
        checksum=meta.output_digest(public),
        ca_checksum=meta.output_digest({TLS_CA_KEY: ca.cert_pem}),
        not_after=not_after,
    )
