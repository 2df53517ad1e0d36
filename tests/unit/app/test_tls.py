"""The app's TLS settings (BROKER_TLS_CA_FILE, BROKER_TLS_SERVER_NAME) and the per-host TLS name
through kombu's failover, pool clones and Celery's shared ``broker_use_ssl`` (no broker needed)."""

from __future__ import annotations

import random
import ssl
from typing import Any, cast

import pytest
from kombu import Connection

from app.config import AppConfig, ConfigError, celery_settings, from_env
from app.factory import make_app
from app.tls import PerHostTlsConnection, _PerHost
from contract import wire

HOSTS = (
    "rabbitmq-0.rabbitmq-nodes.ha-celery.svc.cluster.local",
    "rabbitmq-1.rabbitmq-nodes.ha-celery.svc.cluster.local",
)
TLS_ENV = {
    wire.ENV_BROKER_HOSTS: ",".join(HOSTS),
    wire.ENV_BROKER_USER: "celery",
    wire.ENV_BROKER_PASSWORD: "pw",
    wire.ENV_BROKER_TLS_CA_FILE: "/etc/ha-celery/broker-ca/ca.crt",
}


def test_hosts_with_a_ca_are_amqps_on_5671_and_verified() -> None:
    config = from_env(TLS_ENV)
    assert config.broker_urls == tuple(f"amqps://celery:pw@{h}:5671/%2F" for h in HOSTS)
    options = celery_settings(config, random.Random(0))["broker_use_ssl"]
    assert options == {
        "ca_certs": "/etc/ha-celery/broker-ca/ca.crt",
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
    }


def test_without_a_ca_nothing_is_tls() -> None:
    env = {k: v for k, v in TLS_ENV.items() if k != wire.ENV_BROKER_TLS_CA_FILE}
    config = from_env(env)
    assert all(u.startswith("amqp://") and ":5672/" in u for u in config.broker_urls)
    assert celery_settings(config, random.Random(0))["broker_use_ssl"] is False


INVALID = [
    ("relative ca", {**TLS_ENV, wire.ENV_BROKER_TLS_CA_FILE: "ca.crt"}, ["BROKER_TLS_CA_FILE='ca.crt'", "absolute"]),
    (
        "plain url with ca",
        {wire.ENV_BROKER_URLS: "amqp://u:p@a:5672/", wire.ENV_BROKER_TLS_CA_FILE: "/ca.crt"},
        ["BROKER_URLS", "'amqp'", "with BROKER_TLS_CA_FILE set", "amqps://"],
    ),
    (
        "tls url without ca",
        {wire.ENV_BROKER_URLS: "amqps://u:p@a:5671/"},
        ["BROKER_URLS", "'amqps'", "without BROKER_TLS_CA_FILE", "amqp://"],
    ),
    (
        "server name without ca",
        {wire.ENV_BROKER_URLS: "amqp://u:p@a/", wire.ENV_BROKER_TLS_SERVER_NAME: "rabbitmq"},
        ["BROKER_TLS_SERVER_NAME='rabbitmq'", "needs BROKER_TLS_CA_FILE"],
    ),
    ("bad server name", {**TLS_ENV, wire.ENV_BROKER_TLS_SERVER_NAME: "a_b"}, ["BROKER_TLS_SERVER_NAME='a_b'", "DNS"]),
]


@pytest.mark.parametrize(("env", "expected"), [(e, x) for _, e, x in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_tls_env_names_variable_value_and_allowed(env: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    for fragment in expected:
        assert fragment in str(info.value), f"{fragment!r} missing from: {info.value}"


class _Recorder:
    """Stands in for py-amqp's Connection: records the TLS name each connect would check."""

    def __init__(self, names: list[object]) -> None:
        self.names = names

    def __call__(self, **opts: Any) -> _Recorder:
        self.names.append(opts["ssl"]["server_hostname"])
        return self

    def connect(self) -> None:
        pass


def tls_name(conn: Connection) -> object:
    assert isinstance(conn.ssl, dict), conn.ssl
    return conn.ssl["server_hostname"]


def names_checked(conn: Connection) -> list[object]:
    """The TLS name kombu's real establish_connection hands py-amqp, on each node of the list."""
    names: list[object] = []
    for i in range(len(HOSTS)):
        if i:
            conn.switch(conn.alt[i])
        transport = conn.transport
        transport.Connection = _Recorder(names)  # type: ignore[attr-defined]
        transport.establish_connection()
    return names


def test_stock_kombu_keeps_the_first_host_after_a_failover() -> None:
    """Why app.tls exists: kombu writes the first host into the shared options, so the next node's
    certificate would be checked against the first node's name."""
    shared: dict[str, object] = {"server_hostname": None}
    conn = Connection(";".join(f"amqps://u:p@{h}:5671//" for h in HOSTS), ssl=shared)
    assert names_checked(conn) == [HOSTS[0], HOSTS[0]], "kombu changed: app.tls may no longer be needed"


def test_every_connection_checks_the_host_it_uses() -> None:
    shared: dict[str, object] = {"ca_certs": "/ca.crt", "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    conn = PerHostTlsConnection(";".join(f"amqps://u:p@{h}:5671//" for h in HOSTS), ssl=shared)
    assert names_checked(conn) == list(HOSTS)
    # A pool clone made while on the second host fails over to the first with the first's name.
    clone = conn.clone()
    assert tls_name(clone) == HOSTS[1]
    clone.switch(clone.alt[0])
    assert tls_name(clone) == HOSTS[0]
    assert shared["server_hostname"] is None, "the shared options (Celery's broker_use_ssl) were written to"
    assert isinstance(conn.ssl, dict)
    assert conn.ssl["ca_certs"] == "/ca.crt"


def test_an_explicit_server_name_is_kept_for_every_host() -> None:
    conn = PerHostTlsConnection(";".join(f"amqps://u:p@{h}:5671//" for h in HOSTS), ssl={"server_hostname": "rabbitmq"})
    conn.switch(conn.alt[1])
    assert tls_name(conn) == "rabbitmq"


def test_the_apps_connections_are_per_host() -> None:
    app = make_app(from_env(TLS_ENV), random.Random(0))
    pooled = cast(Connection, app.pool.acquire(block=False))
    for conn in (app.connection_for_write(), app.connection_for_read(), pooled):
        assert isinstance(conn, _PerHost), type(conn)
        assert tls_name(conn) == conn.hostname
    first = pooled.hostname
    pooled.switch(pooled.alt[1])
    assert tls_name(pooled) == pooled.hostname != first
    pooled.release()


def test_plain_config_gets_no_tls_options() -> None:
    app = make_app(AppConfig(broker_urls=("amqp://u:p@a:5672//",)), random.Random(0))
    assert app.connection_for_write().ssl is False
