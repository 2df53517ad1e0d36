"""Unit tests: plan image refs -> local images (fake Image values: nothing is built), and the worker image's facts
against app/Dockerfile and components.registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from contract.image import WORKER_SOURCES, source_tag
from harness.runtime import images
from harness.runtime.images import Image
from harness.runtime.rootfs import Bind
from tests.conftest import ROOT, Plan

DIGEST = "@sha256:" + "0" * 64


def fake_images(root: Path = ROOT) -> dict[str, Image]:
    common = {"entrypoint": (), "cmd": ("x",), "uid": 1, "gid": 1, "workdir": "/", "differences": ("d",)}
    return {
        "rabbitmq": Image(
            name="rabbitmq",
            rootfs=Path("/nonexistent/r"),
            env={},
            binds=(),
            version="rabbitmq-server 4.3.6-1, erlang 1:29.1.1+dfsg-1",
            upstream_version="4.3.6",
            **common,  # type: ignore[arg-type]
        ),
        "worker": Image(
            name="worker",
            rootfs=Path("/nonexistent/w"),
            env={},
            binds=(Bind(root / "app", "/srv/app", True), Bind(root / "contract", "/srv/contract", True)),
            version="python 3.11.2, celery 5.7.0",
            upstream_version="3.11.2",
            **common,  # type: ignore[arg-type]
        ),
    }


def plan_refs(plan: Plan) -> dict[str, str]:
    """{object kind/name: image} of every container in the plan's manifests."""
    out: dict[str, str] = {}
    for path in plan.manifests():
        doc = yaml.safe_load(path.read_text())
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        pod = pod.get("spec", pod) if isinstance(pod, dict) else {}
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            out[f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"] = c["image"]
    return out


def test_every_plan_image_maps_to_a_local_image(plans: dict[str, Plan]) -> None:
    fakes = fake_images()
    for stack, plan in plans.items():
        refs = plan_refs(plan)
        kinds = {key.split("/")[0] for key in refs}
        assert {"StatefulSet", "Deployment"} <= kinds, (stack, refs)
        for key, ref in refs.items():
            image = images.image_for(ref, fakes)
            expected = "rabbitmq" if key.startswith("StatefulSet/") else "worker"
            assert image.name == expected, (stack, key, ref)
            assert ref in image.differences[0]
            assert image.differences[1:] == ("d",)


def test_rabbitmq_ref_records_plan_tag_vs_local_version() -> None:
    image = images.image_for("rabbitmq:4.3.5-management", fake_images())
    assert image.differences[0] == (
        "plan image rabbitmq:4.3.5-management: RabbitMQ 4.3.5; local runtime runs 4.3.6 "
        "(rabbitmq-server 4.3.6-1, erlang 1:29.1.1+dfsg-1)"
    )
    same = images.image_for("docker.io/library/rabbitmq:4.3.6-management", fake_images())
    assert "runs the same version" in same.differences[0]


def test_mirror_ref_maps_to_rabbitmq(plan_runner: object) -> None:
    done = plan_runner("dev", "mirrorRabbitmqImage=true")  # type: ignore[operator]
    assert done.returncode == 0, done.stderr
    plan_dir = Path(done.stdout.split("-> ")[-1].strip())
    refs = plan_refs(Plan("dev", plan_dir, []))
    mirrored = [ref for key, ref in refs.items() if key.startswith("StatefulSet/")]
    assert mirrored
    for ref in mirrored:
        assert re.match(
            r"^[a-z0-9-]+-docker\.pkg\.dev/.+/rabbitmq:4\.3\.[0-9]+-management-amd64-[0-9a-f]{8}@sha256:", ref
        ), ref
        assert images.image_for(ref, fake_images()).name == "rabbitmq"
    for ref in (
        "europe-west1-docker.pkg.dev/my-project/ha-celery-prod/rabbitmq:4.3.5-management",
        "europe-west1-docker.pkg.dev/my-project/ha-celery-prod/rabbitmq:4.3.5-management-amd64-arm64-0123abcd",
        "eu.gcr.io/my-project/ha-celery-rabbitmq:4.3.5-management-amd64-0123abcd" + DIGEST,
    ):
        assert images.image_for(ref, fake_images()).name == "rabbitmq", ref
        assert "RabbitMQ 4.3.5" in images.image_for(ref, fake_images()).differences[0]


def test_worker_ref_compares_tag_with_the_checkout() -> None:
    tag = source_tag(ROOT)
    same = images.image_for(f"us-east1-docker.pkg.dev/p/ha-celery-dev/worker:{tag}-amd64{DIGEST}", fake_images())
    assert "built from these sources" in same.differences[0]
    gcr = images.image_for(f"gcr.io/p/ha-celery-worker:{tag}-amd64-arm64{DIGEST}", fake_images())
    assert "built from these sources" in gcr.differences[0]
    other = images.image_for(f"us-east1-docker.pkg.dev/p/ha-celery-dev/worker:0123456789abcdef{DIGEST}", fake_images())
    assert f"hash to {tag}" in other.differences[0]


@pytest.mark.parametrize(
    "ref",
    [
        "rabbitmq:4.3.5",  # not the management variant
        "rabbitmq:4.3.5-management-alpine",
        "rabbitmq:4.2.1-management",
        "rabbitmq:4.3-management",  # floating tag
        "bitnami/rabbitmq:4.3.5-management",  # another vendor's image
        "worker:1",  # no registry path
        "redis:7",
        "us-east1-docker.pkg.dev/p/r/worker",  # no tag
        "gcr.io/p/rabbitmq:4.3.5-management",  # not the mirror's name in a gcr.io repository
        "rabbitmq:4.3.5-management-amd64-0123abcd",  # a mirror tag on Docker Hub
    ],
)
def test_unknown_ref_is_refused_by_name(ref: str) -> None:
    with pytest.raises(images.UnsupportedImage) as err:
        images.image_for(ref, fake_images())
    assert repr(ref) in str(err.value)
    assert "supported: rabbitmq:4.3.<patch>-management" in str(err.value)
    assert "worker:<tag>" in str(err.value)


def test_image_not_built_is_named() -> None:
    with pytest.raises(KeyError, match="'worker'"):
        images.image_for("a.b/worker:1", {"rabbitmq": fake_images()["rabbitmq"]})


def test_worker_facts_match_the_dockerfile() -> None:
    text = (ROOT / "app/Dockerfile").read_text()
    assert f"FROM python:{images.WORKER_IMAGE_PYTHON}-slim-trixie" in text
    assert images.WORKER_IMAGE_PYTHON.startswith(images.WORKER_PYTHON_MINOR + ".")
    env_block = re.search(r"^ENV (.*?)(?:\n\n)", text, flags=re.MULTILINE | re.DOTALL)
    assert env_block is not None
    for key, value in re.findall(r"([A-Z_]+)=(\S+)", env_block.group(1)):
        assert images.WORKER_ENV[key] == value, key
    assert f"USER {images.WORKER_UID}:{images.WORKER_GID}" in text
    assert f"WORKDIR {images.WORKER_WORKDIR}" in text
    assert f"--gid {images.WORKER_GID} celery" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert cmd is not None
    assert tuple(yaml.safe_load(cmd.group(1))) == images.WORKER_CMD
    assert "ENTRYPOINT" not in text
    assert "pip install --require-hashes --no-deps" in text
    # Everything the image COPYs is mounted at the same place.
    for src in WORKER_SOURCES:
        assert (src, f"/srv/{src}") in images.WORKER_CODE
        assert f"COPY {src} /srv/{src}" in text


def test_locked_versions() -> None:
    locked = images.locked_versions(ROOT / "app/requirements.txt")
    assert locked["celery"] == "5.7.0"
    assert locked["tzdata"] == "2026.6"
    assert "--hash" not in locked


def test_image_helpers() -> None:
    worker = fake_images()["worker"]
    env = worker.container_env("w-1", {"A": "1"})
    assert env == {"HOSTNAME": "w-1", "A": "1"}
    assert worker.command() == ["x"]
    assert worker.command(args=["y"]) == ["y"]
    argv = worker.container_argv(hostname="w-1", argv=["x"], env=env, pod_binds=[Bind(Path("/h/tmp"), "/tmp")])
    script = argv[-1]
    assert script.index("/srv/app") < script.index("/srv/contract") < script.index('"$R"/tmp')
    assert "--uid=1 --gid=1 --groups=1" in script
