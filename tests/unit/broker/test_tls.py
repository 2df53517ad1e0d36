"""broker.render with TLS: the listener, the ssl_options and the init container's copy of the pair."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig, BrokerTls, PeerDiscovery, RabbitVersion
from broker.render import rabbitmq_conf_settings, render_rabbitmq_conf, setup_script

TLS = BrokerTls(cacertfile="/tls/ca.crt", certfile="/tls/tls.crt", keyfile="/tls/tls.key")


def config(**overrides: object) -> BrokerConfig:
    return BrokerConfig(version=RabbitVersion.V4_3, peer_discovery=PeerDiscovery.K8S, **overrides)  # type: ignore[arg-type]


def test_tls_replaces_the_plain_listener() -> None:
    settings = rabbitmq_conf_settings(config(tls=TLS))
    assert settings["listeners.tcp"] == "none"
    assert "listeners.tcp.default" not in settings
    assert settings["listeners.ssl.default"] == "5671"
    assert (settings["ssl_options.cacertfile"], settings["ssl_options.certfile"], settings["ssl_options.keyfile"]) == (
        "/tls/ca.crt",
        "/tls/tls.crt",
        "/tls/tls.key",
    )
    assert (settings["ssl_options.verify"], settings["ssl_options.fail_if_no_peer_cert"]) == ("verify_none", "false")
    assert "tlsv1.1" not in render_rabbitmq_conf(config(tls=TLS))


def test_without_tls_nothing_changes() -> None:
    settings = rabbitmq_conf_settings(config())
    assert settings["listeners.tcp.default"] == "5672"
    assert not [
        k for k in settings if k.startswith(("listeners.ssl", "ssl_options", "listeners.tcp ")) or k == "listeners.tcp"
    ]


def test_bound_tls_listener() -> None:
    assert (
        rabbitmq_conf_settings(config(tls=TLS, bind_address="127.0.0.1"))["listeners.ssl.default"] == "127.0.0.1:5671"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tls": BrokerTls("ca.crt", "/t.crt", "/t.key")}, "tls.cacertfile"),
        ({"tls": BrokerTls("/ca.crt", "/t crt", "/t.key")}, "tls.certfile"),
        ({"tls": TLS, "amqps_port": 15672}, "must differ"),
        ({"tls": TLS, "amqps_port": 0}, "amqps_port"),
    ],
)
def test_invalid_tls_config_is_refused_by_name(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        config(**overrides)


def setup(**tls: object) -> str:
    return setup_script(
        statefulset="rabbitmq",
        replicas=3,
        amqp_port=5671,
        conf_source="/src",
        conf_dir="/conf.d",
        data_dir="/data",
        plugins_file="/plugins",
        **tls,  # type: ignore[arg-type]
    )


def test_setup_copies_only_this_pods_pair_and_guards_a_missing_one() -> None:
    script = setup(tls_source="/secret", tls=TLS)
    assert 'cp "/secret/$MY_POD_NAME.crt" /tls/tls.crt' in script
    assert 'cp "/secret/$MY_POD_NAME.key" /tls/tls.key' in script
    assert "chmod 600 /tls/tls.key" in script
    assert "TLS Secret has no $f for this pod" in script
    assert "/secret" not in setup()
    with pytest.raises(ValueError, match="tls_source"):
        setup(tls=TLS)
