"""plan.mocks and engine.json: what the engine would store, generated values that a replacement renews."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pulumi.runtime import MockResourceArgs

from plan.mocks import MOCK_SECRET_PREFIX, REPLACED_MARK, RecordingMocks

ROOT = Path(__file__).resolve().parents[3]


def _new(mocks: RecordingMocks, token: str, name: str, inputs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    return mocks.new_resource(MockResourceArgs(typ=token, name=name, inputs=inputs, custom=True))


def test_a_replaced_generator_and_what_it_signs_get_new_values() -> None:
    mocks = RecordingMocks(replace=frozenset({"pw", "ca-key"}))
    _, kept = _new(mocks, "random:index/randomPassword:RandomPassword", "other", {"length": 32})
    pw_id, pw = _new(mocks, "random:index/randomPassword:RandomPassword", "pw", {"length": 32})
    assert REPLACED_MARK not in kept["result"]
    assert pw["result"].endswith(REPLACED_MARK)
    assert pw_id == "pw-id"  # pulumi-random's id is always "none": a rotation does not change it
    _, key = _new(mocks, "tls:index/privateKey:PrivateKey", "ca-key", {"algorithm": "ECDSA"})
    cert_id, cert = _new(
        mocks, "tls:index/selfSignedCert:SelfSignedCert", "ca", {"privateKeyPem": key["privateKeyPem"]}
    )
    assert cert["certPem"].endswith(REPLACED_MARK)
    assert cert_id == f"ca-id{REPLACED_MARK}"


def test_replace_names_one_resource_by_type_and_name_and_a_rebuilt_image_gets_a_new_digest() -> None:
    password = "random:index/randomPassword:RandomPassword"
    mocks = RecordingMocks(replace=frozenset({f"{password}::cookie", "docker-build:index:Image::worker"}))
    _, pw = _new(mocks, password, "cookie", {"length": 32})
    _, other = _new(mocks, password, "other", {"length": 32})
    assert pw["result"].endswith(REPLACED_MARK)
    assert not other["result"].endswith(REPLACED_MARK)
    _, image = _new(mocks, "docker-build:index:Image", "worker", {"tags": ["r/w:1"]})
    assert image["digest"].endswith(REPLACED_MARK)
    assert image["ref"] == f"r/w:1@{image['digest']}"


def test_a_bare_replace_name_two_resources_share_is_refused(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "plan", "--stack", "dev", "--out", str(tmp_path)]
    done = subprocess.run(
        [*args, "--replace", "rabbitmq-erlang-cookie"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 2
    assert (
        "rabbitmq-erlang-cookie names 2 resources; give one: kubernetes:core/v1:Secret::rabbitmq-erlang-cookie, "
        "random:index/randomPassword:RandomPassword::rabbitmq-erlang-cookie"
    ) in done.stderr


def test_an_unnamed_kubernetes_object_is_autonamed_by_what_replaces_it() -> None:
    mocks = RecordingMocks()

    def name(data: str, labels: dict[str, str]) -> str:
        inputs = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": labels}, "data": {"a": data}}
        return str(_new(mocks, "kubernetes:core/v1:ConfigMap", "cfg", inputs)[1]["metadata"]["name"])

    assert name("x", {}).startswith("cfg-")
    assert name("x", {}) == name("x", {"team": "a"})
    assert name("x", {}) != name("y", {})


def test_engine_json_keeps_options_dependencies_and_only_hashes_of_secrets(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "plan", "--stack", "dev", "--out", str(tmp_path)]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, timeout=180)
    text = (tmp_path / "dev" / "engine.json").read_text()
    assert MOCK_SECRET_PREFIX not in text
    engine = {(e["type"], e["name"]): e for e in json.loads(text)}
    statefulset = engine[("kubernetes:apps/v1:StatefulSet", "rabbitmq-statefulset")]
    assert statefulset["ignoreChanges"] == ["spec.volumeClaimTemplates[0].spec.resources.requests.storage"]
    assert statefulset["customTimeouts"]["update"] == "4560s"
    # The ConfigMap is an ordering edge (depends_on), not a property dependency of the spec: the
    # engine's dependent replacement follows property dependencies (cloud review 3, finding 1).
    config_map = "kubernetes:core/v1:ConfigMap::rabbitmq-config"
    assert config_map in statefulset["dependencies"]
    assert config_map not in statefulset["propertyDependencies"]["spec"]
    assert (
        "random:index/randomPassword:RandomPassword::rabbitmq-worker-password"
        in (statefulset["propertyDependencies"]["spec"])
    )
    assert statefulset["provider"] == "pulumi:providers:kubernetes::ha-celery-dev-k8s"
    storage = engine[("kubernetes:storage.k8s.io/v1:StorageClass", "rabbitmq-storage")]
    assert (storage["deleteBeforeReplace"], storage["replaceOnChanges"]) == (
        True,
        ["reclaimPolicy", "volumeBindingMode"],
    )
    secret = engine[("kubernetes:core/v1:Secret", "rabbitmq-worker-user")]
    assert list(secret["secretHashes"]) == ["stringData"]
    assert len(secret["secretHashes"]["stringData"]) == 16
