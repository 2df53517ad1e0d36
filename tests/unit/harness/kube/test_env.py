"""Env resolution and $(VAR) expansion as the kubelet does them."""

from __future__ import annotations

import pytest

from harness.kube.env import (
    EnvError,
    PodFacts,
    argv,
    expand,
    expand_command,
    field_value,
    resolve_env,
    service_link_env,
)
from harness.kube.objects import ConfigMap, Container, EnvFrom, EnvVar, KeyRef, Secret, Service, ServicePort

POD = PodFacts(
    name="rabbitmq-1",
    namespace="ha-celery",
    node_name="node-b",
    pod_ip="10.0.0.2",
    host_ip="192.168.0.2",
    labels={"app": "rabbitmq"},
    annotations={"a": "b"},
)


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost: $", "cost: $"),
        ("$()", "$()"),
        ("a$$b", "a$b"),
    ],
)
def test_expand(text: str, out: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == out


def test_values_see_only_earlier_vars() -> None:
    c = Container(
        "c",
        "img",
        env=(
            EnvVar("LATE_REF", value="$(POD)"),
            EnvVar("POD", field_ref="metadata.name"),
            EnvVar("NODE", value="rabbit@$(POD).$(SVC)"),
            EnvVar("SVC", value="nodes"),
        ),
    )
    env = resolve_env(c, POD)
    assert env["LATE_REF"] == "$(POD)"
    assert env["NODE"] == "rabbit@rabbitmq-1.$(SVC)"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "rabbitmq-1"),
        ("metadata.namespace", "ha-celery"),
        ("metadata.labels['app']", "rabbitmq"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['a']", "b"),
        ("spec.nodeName", "node-b"),
        ("status.podIP", "10.0.0.2"),
        ("status.hostIP", "192.168.0.2"),
    ],
)
def test_field_refs(path: str, value: str) -> None:
    assert field_value(path, POD) == value


def test_secret_and_configmap_refs() -> None:
    secret = Secret("creds", "ha-celery", {"username": b"celery"})
    cm = ConfigMap("cfg", "ha-celery", {"mode": "fast"})
    c = Container(
        "c",
        "img",
        env=(
            EnvVar("U", secret_ref=KeyRef("creds", "username")),
            EnvVar("M", config_map_ref=KeyRef("cfg", "mode")),
            EnvVar("OPT", secret_ref=KeyRef("creds", "nope", optional=True)),
            EnvVar("OPT2", config_map_ref=KeyRef("ghost", "k", optional=True)),
        ),
    )
    env = resolve_env(c, POD, secrets=[secret], configmaps=[cm])
    assert env == {"U": "celery", "M": "fast"}


@pytest.mark.parametrize(
    "ref", [EnvVar("X", secret_ref=KeyRef("creds", "nope")), EnvVar("X", secret_ref=KeyRef("ghost", "k"))]
)
def test_missing_required_ref_fails_the_container(ref: EnvVar) -> None:
    with pytest.raises(EnvError, match="not found"):
        resolve_env(Container("c", "img", env=(ref,)), POD, secrets=[Secret("creds", "ns", {"u": b"x"})])


def test_masked_secret_is_refused_only_when_used() -> None:
    masked = Secret("creds", "ns", {"password": b"[secret]", "user": b"celery"}, frozenset({"password"}))
    ok = Container("c", "img", env=(EnvVar("U", secret_ref=KeyRef("creds", "user")),))
    assert resolve_env(ok, POD, secrets=[masked]) == {"U": "celery"}
    bad = Container("c", "img", env=(EnvVar("P", secret_ref=KeyRef("creds", "password")),))
    with pytest.raises(EnvError, match="still masked"):
        resolve_env(bad, POD, secrets=[masked])


def test_env_from_with_prefix_and_override() -> None:
    cm = ConfigMap("cfg", "ns", {"A": "from-cm", "B": "b"})
    c = Container(
        "c",
        "img",
        env_from=(EnvFrom("P_", "cfg", None, False), EnvFrom("", None, "ghost", True)),
        env=(EnvVar("P_A", value="env-wins"), EnvVar("REF", value="$(P_B)")),
    )
    assert resolve_env(c, POD, configmaps=[cm]) == {"P_A": "env-wins", "P_B": "b", "REF": "b"}


def test_image_env_is_overridden_and_not_expandable() -> None:
    c = Container("c", "img", env=(EnvVar("PATH", value="/opt"), EnvVar("X", value="$(LANG)")))
    env = resolve_env(c, POD, image_env={"PATH": "/usr/bin", "LANG": "C.UTF-8"})
    assert env == {"PATH": "/opt", "LANG": "C.UTF-8", "X": "$(LANG)"}


def test_command_and_args_expansion() -> None:
    c = Container("c", "img", command=("echo", "$(A)"), args=("$$(A)", "$(NOPE)"))
    assert expand_command(c, {"A": "1"}) == (["echo", "1"], ["$(A)", "$(NOPE)"])


def test_argv_with_image_entrypoint() -> None:
    only_args = Container("c", "img", args=("x",))
    assert argv(only_args, {}, ["/entry.sh"], ["default"]) == ["/entry.sh", "x"]
    nothing = Container("c", "img")
    assert argv(nothing, {}, ["/entry.sh"], ["rabbitmq-server"]) == ["/entry.sh", "rabbitmq-server"]
    command = Container("c", "img", command=("celery",))
    assert argv(command, {}, ["/entry.sh"], ["default"]) == ["celery"]


def test_service_links() -> None:
    svcs = [
        Service(
            "rabbitmq",
            "ha-celery",
            {},
            (ServicePort(5672, 5672, "amqp"), ServicePort(15672, 15672, "management")),
            headless=False,
            publish_not_ready_addresses=False,
        ),
        Service(
            "rabbitmq-nodes",
            "ha-celery",
            {},
            (ServicePort(4369, 4369, "epmd"),),
            headless=True,
            publish_not_ready_addresses=True,
        ),
    ]
    env = service_link_env(svcs, {"rabbitmq": "10.96.0.10", "rabbitmq-nodes": "ignored"}, "ha-celery")
    assert env["RABBITMQ_SERVICE_HOST"] == "10.96.0.10"
    assert env["RABBITMQ_SERVICE_PORT"] == "5672"
    assert env["RABBITMQ_SERVICE_PORT_MANAGEMENT"] == "15672"
    assert env["RABBITMQ_PORT"] == "tcp://10.96.0.10:5672"
    assert env["RABBITMQ_PORT_15672_TCP_ADDR"] == "10.96.0.10"
    assert not any(k.startswith("RABBITMQ_NODES") for k in env)
    c = Container("c", "img", env=(EnvVar("RABBITMQ_PORT", value="override"),))
    assert resolve_env(c, POD, service_env=env)["RABBITMQ_PORT"] == "override"
