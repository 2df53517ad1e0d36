"""brokerTls in the plans: prod speaks AMQP over TLS on 5671 only; dev stays plain unless asked.

Read from the offline plans (the program under Pulumi mocks): the rendered rabbitmq.conf, every
port the broker's objects name, the pulumi-tls resources and what the Secrets and pods carry.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Plan

PODS = [f"rabbitmq-{i}" for i in range(3)]
FQDN = "{}.rabbitmq-nodes.ha-celery.svc.cluster.local"


def conf(plan: Plan) -> dict[str, str]:
    [config_map] = [c for c in plan.objects("ConfigMap") if c["metadata"]["name"] == "rabbitmq-config"]
    lines = config_map["data"]["20-ha-celery.conf"].splitlines()
    return dict(line.split(" = ", 1) for line in lines if line and not line.startswith("#"))


def broker_objects(plan: Plan) -> list[dict[str, Any]]:
    return [
        o
        for kind in ("StatefulSet", "Service", "NetworkPolicy")
        for o in plan.objects(kind)
        if o["metadata"]["name"].startswith("rabbitmq")
    ]


def ports_named(obj: Any) -> set[int]:
    """Every integer under a key that names a port (port, containerPort, targetPort)."""
    found: set[int] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in {"port", "containerPort", "targetPort"} and isinstance(value, int):
                found.add(value)
            found |= ports_named(value)
    elif isinstance(obj, list):
        for item in obj:
            found |= ports_named(item)
    return found


def test_prod_listens_on_5671_only_with_tls(plans: dict[str, Plan]) -> None:
    settings = conf(plans["prod"])
    assert settings["listeners.tcp"] == "none", "no plain AMQP listener"
    assert "listeners.tcp.default" not in settings
    assert settings["listeners.ssl.default"] == "5671"
    assert settings["ssl_options.cacertfile"] == "/etc/rabbitmq/tls/ca.crt"
    assert settings["ssl_options.certfile"] == "/etc/rabbitmq/tls/tls.crt"
    assert settings["ssl_options.keyfile"] == "/etc/rabbitmq/tls/tls.key"
    assert (settings["ssl_options.versions.1"], settings["ssl_options.versions.2"]) == ("tlsv1.3", "tlsv1.2")
    ports = set().union(*(ports_named(o) for o in broker_objects(plans["prod"])))
    assert 5671 in ports
    assert 5672 not in ports, "a Service, container port, probe or NetworkPolicy still names 5672"
    [container] = plans["prod"].object("StatefulSet")["spec"]["template"]["spec"]["containers"]
    # Readiness asks the Prometheus listener (plain HTTP with and without TLS), not the AMQP port.
    assert container["readinessProbe"]["httpGet"]["port"] == "prometheus"
    assert {"name": "amqps", "containerPort": 5671} in container["ports"]


def test_dev_stays_plain_by_default(plans: dict[str, Plan]) -> None:
    settings = conf(plans["dev"])
    assert settings["listeners.tcp.default"] == "5672"
    assert not any(key.startswith(("listeners.ssl", "ssl_options")) for key in settings)
    assert not [s for s in plans["dev"].objects("Secret") if s["metadata"]["name"] in {"rabbitmq-tls", "rabbitmq-ca"}]
    assert not plans["dev"].of_type("tls:index/privateKey:PrivateKey")


def test_a_ca_and_one_certificate_per_node_named_after_the_pod_and_the_service(plans: dict[str, Plan]) -> None:
    plan = plans["prod"]
    [ca] = plan.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert ca["inputs"]["isCaCertificate"] is True
    assert "cert_signing" in ca["inputs"]["allowedUses"]
    requests = {r["name"]: r["inputs"] for r in plan.of_type("tls:index/certRequest:CertRequest")}
    assert sorted(requests) == [f"rabbitmq-{i}-csr" for i in range(3)]
    for i, pod in enumerate(PODS):
        names = requests[f"rabbitmq-{i}-csr"]["dnsNames"]
        assert names[0] == FQDN.format(pod), names
        assert "rabbitmq.ha-celery.svc.cluster.local" in names
        assert not any(FQDN.format(other) in names for other in PODS if other != pod), "one node, one name"
    certs = plan.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert len(certs) == 3
    for cert in certs:
        assert "server_auth" in cert["inputs"]["allowedUses"]
        assert cert["inputs"]["earlyRenewalHours"] < cert["inputs"]["validityPeriodHours"]
        assert cert["inputs"]["caPrivateKeyPem"] == "[secret]", "the CA key is a secret in the state"
    keys = plan.of_type("tls:index/privateKey:PrivateKey")
    assert {k["inputs"]["algorithm"] for k in keys} == {"ECDSA"}
    assert len(keys) == 4


def test_keys_only_in_secrets_and_masked(plans: dict[str, Plan]) -> None:
    plan = plans["prod"]
    secrets = {s["metadata"]["name"]: s for s in plan.objects("Secret")}
    broker = secrets["rabbitmq-tls"]["stringData"]
    assert sorted(broker) == sorted(["ca.crt", *(f"{p}.crt" for p in PODS), *(f"{p}.key" for p in PODS)])
    assert set(broker.values()) == {"[secret]"}
    assert secrets["rabbitmq-ca"]["stringData"] == {"ca.crt": "[secret]"}, "clients get the CA alone"
    assert "PRIVATE KEY" not in json.dumps(plan.resources)
    # No private key anywhere but the broker's Secret: not in a ConfigMap, not in a client's Secret.
    for config_map in plan.objects("ConfigMap"):
        assert not any(k.endswith(".key") for k in config_map.get("data", {}))


def volumes_and_mounts(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
    return volumes, mounts


def test_workers_and_scheduler_mount_the_ca_not_the_keys(
    plan_runner: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = plan_runner("prod", "schedulerEnabled=true")
    assert done.returncode == 0, done.stderr
    plan = Plan("prod", Path(done.stdout.split("-> ")[-1].strip()), [])
    deployments = plan.objects("Deployment")
    assert len(deployments) == 2, "one per lane"
    [job] = plan.objects("Job")
    for obj in (*deployments, job):
        spec = obj["spec"]["template"]["spec"]
        volumes, mounts = volumes_and_mounts(spec)
        assert mounts["/etc/ha-celery/broker-ca"] == "broker-ca", obj["kind"]
        source = volumes["broker-ca"]["secret"]
        assert (source["secretName"], source["items"]) == ("rabbitmq-ca", [{"key": "ca.crt", "path": "ca.crt"}])
        assert not any(v.get("secret", {}).get("secretName") == "rabbitmq-tls" for v in volumes.values())
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c["env"]}
        assert env["BROKER_TLS_CA_FILE"] == "/etc/ha-celery/broker-ca/ca.crt", obj["kind"]
        assert env["BROKER_PORT"] == "5671", obj["kind"]


def test_the_broker_copies_only_its_own_pair(plans: dict[str, Plan]) -> None:
    spec = plans["prod"].object("StatefulSet")["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    script = init["command"][-1]
    assert 'cp "/etc/ha-celery/tls/$MY_POD_NAME.key" /etc/rabbitmq/tls/tls.key' in script
    assert "chmod 600 /etc/rabbitmq/tls/tls.key" in script
    assert "/dev/tcp/$peer$K8S_HOSTNAME_SUFFIX/5671" in script, "the blank-seed probe looks at the TLS port"
    [broker] = spec["containers"]
    assert {m["mountPath"] for m in broker["volumeMounts"]} >= {"/etc/rabbitmq/tls"}
    assert "/etc/ha-celery/tls" not in {m["mountPath"] for m in broker["volumeMounts"]}, "every node's keys"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["emptyDir"]["medium"] == "Memory", "the copied key never lands on the node's disk"
