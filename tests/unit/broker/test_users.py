"""Per-role broker users in the plan: which pod mounts which credential, and what the broker pods'
postStart hook does with them. Their permissions are held to account on a real 4.3 broker in
tests/drills/dev_plan/test_broker_users.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.users import Permissions, role_user, role_users, users_script
from contract.wire import (
    BROKER_CA_SECRET_SUFFIX,
    BROKER_USERNAME,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELAYED_DELIVERY_EXCHANGE,
    QUEUE_NAME,
    ROLE_PASSWORDS_DIR,
    BrokerRole,
    delayed_level,
    role_secret_name,
    role_username,
)
from drill.plan_secrets import ha_celery_rules
from harness.kube.objects import load_plan
from harness.kube.secretfill import fill_secrets, rules_generator
from tests.conftest import Plan

ADMIN_SECRET = "rabbitmq-default-user"


def _secret_refs(spec: dict[str, Any]) -> Iterator[str]:
    """Every Secret a pod spec reads: env, envFrom, secret and projected volumes."""
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield ref["name"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield source["secretRef"]["name"]
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield volume["secret"]["secretName"]
        for source in (volume.get("projected") or {}).get("sources", []):
            if "secret" in source:
                yield source["secret"]["name"]


def _assert_reads_only(plan: Plan, kind: str, role: BrokerRole) -> None:
    objects = plan.objects(kind)
    assert objects, f"{plan.stack}: no {kind}"
    for obj in objects:
        refs = set(_secret_refs(obj["spec"]["template"]["spec"]))
        # With brokerTls (prod) a client also mounts the CA-only Secret: a certificate, no key.
        ca = {f"rabbitmq{BROKER_CA_SECRET_SUFFIX}"} if plan.stack == "prod" else set()
        assert refs == {role_secret_name("rabbitmq", role), *ca}, (
            f"{plan.stack}: {kind}/{obj['metadata']['name']} reads {refs}"
        )
        assert ADMIN_SECRET not in refs


def test_worker_pods_mount_the_worker_user_only_never_the_administrator(plan: Plan) -> None:
    _assert_reads_only(plan, "Deployment", BrokerRole.WORKER)


def test_the_scheduler_pod_mounts_the_scheduler_user_only(plans: dict[str, Plan]) -> None:
    # dev runs the scheduler Job (schedulerEnabled: true); prod has none.
    _assert_reads_only(plans["dev"], "Job", BrokerRole.SCHEDULER)


def test_the_broker_pods_mount_every_role_password_and_the_admin_only_as_conf(plan: Plan) -> None:
    sts = plan.object("StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    sources = volumes["role-passwords"]["projected"]["sources"]
    mounted = {s["secret"]["name"]: s["secret"]["items"] for s in sources}
    assert mounted == {
        role_secret_name("rabbitmq", u.role): [{"key": "password", "path": u.username}] for u in role_users()
    }
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert {"name": "role-passwords", "mountPath": ROLE_PASSWORDS_DIR} in container["volumeMounts"]
    hook = " ".join(container["lifecycle"]["postStart"]["exec"]["command"])
    assert users_script(("celery", "celery.long")) in hook, "every lane of the stack"
    # The administrator's credential reaches the broker only as its conf.d file.
    admin = [s for s in volumes["rabbitmq-confd-source"]["projected"]["sources"] if "secret" in s]
    assert [s["secret"]["items"] for s in admin] == [[{"key": "default_user.conf", "path": "30-default-user.conf"}]]


def test_each_role_secret_names_its_user_and_has_a_password_of_its_own(plan: Plan) -> None:
    loaded = fill_secrets(load_plan(plan.directory), rules_generator(ha_celery_rules(random.Random(2))))
    passwords = set()
    for name, username in [(ADMIN_SECRET, BROKER_USERNAME)] + [
        (role_secret_name("rabbitmq", role), role_username(role)) for role in BrokerRole
    ]:
        secret = loaded.secret(name)
        assert secret is not None, name
        assert secret.data["username"].decode() == username
        passwords.add(secret.data["password"].decode())
    assert len(passwords) == len(BrokerRole) + 1, "roles must not share a password"


def test_users_script_imports_every_user_and_permission_in_one_call_passwords_from_their_files(
    tmp_path: Path,
) -> None:
    # Run as the hook runs it (sh), with a rabbitmqctl that keeps what it was given.
    passwords = {u.username: f"{u.role.value}-\"q\\b's p" for u in role_users()}
    for name, password in passwords.items():
        (tmp_path / name).write_text(password + "\n")  # a Secret file may end with a newline
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "rabbitmqctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/argv\ncat >> {tmp_path}/stdin\n')
    fake.chmod(0o755)
    script = "deadline=$(( $(date +%s) + 5 ))\n" + users_script(directory=str(tmp_path))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", script], check=True, env=env, timeout=30)
    assert (tmp_path / "argv").read_text() == "import_definitions\n", "one call, no password in its arguments"
    doc = json.loads((tmp_path / "stdin").read_text())
    assert {u["name"]: u["password"] for u in doc["users"]} == passwords
    assert {u["name"]: u["tags"] for u in doc["users"]} == {u.username: list(u.tags) for u in role_users()}
    granted = {p["user"]: Permissions(p["configure"], p["write"], p["read"]) for p in doc["permissions"]}
    assert granted == {u.username: u.permissions for u in role_users()}
    assert {p["vhost"] for p in doc["permissions"]} == {"/"}
    assert all(password not in script for password in passwords.values())


def test_users_script_gives_up_at_the_deadline_naming_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rabbitmqctl").write_text("#!/bin/sh\nexit 69\n")
    (bin_dir / "rabbitmqctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = "deadline=0\n" + users_script(directory=str(tmp_path))  # past: the first failure is the last
    done = subprocess.run(["sh", "-c", script], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "role users not set up in time" in done.stderr


WORKER_OWN = [QUEUE_NAME, DELAYED_DELIVERY_EXCHANGE, *(delayed_level(n) for n in range(28)), "celery.pidbox"]
WORKER_OWN += ["celery@celery-worker-5bfb7c6f64-jckjc.celery.pidbox", "reply.celery.pidbox"]


@pytest.mark.parametrize("name", WORKER_OWN)
def test_worker_may_declare_its_own_objects(name: str) -> None:
    worker = role_user(BrokerRole.WORKER).permissions
    assert worker.allows("configure", name)
    assert worker.allows("write", name)


@pytest.mark.parametrize(
    "name", [DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, "celery_delayed_x", "other", "amq.topic", "celeryx"]
)
def test_worker_may_not_configure_anything_else(name: str) -> None:
    assert not role_user(BrokerRole.WORKER).permissions.allows("configure", name)


def test_monitoring_has_no_amqp_permission_and_the_clients_no_tag() -> None:
    monitoring = role_user(BrokerRole.MONITORING)
    assert monitoring.tags == ("monitoring",)
    for kind in ("configure", "write", "read"):
        for name in (QUEUE_NAME, DEAD_LETTER_QUEUE, "amq.default"):
            assert not monitoring.permissions.allows(kind, name), (kind, name)
    assert role_user(BrokerRole.WORKER).tags == role_user(BrokerRole.SCHEDULER).tags == ()


def test_every_lanes_queue_is_the_workers_and_the_schedulers_and_no_other_name() -> None:
    """Lanes (contract.lanes): each lane's queue and exchange, exactly; not the dead-letter objects."""
    users = {u.role: u.permissions for u in role_users(("celery", "celery.long"))}
    for role in (BrokerRole.WORKER, BrokerRole.SCHEDULER):
        for kind in ("configure", "write", "read"):
            assert users[role].allows(kind, "celery.long"), (role, kind)
            assert not users[role].allows(kind, "celery.longer"), (role, kind)
            assert not users[role].allows(kind, "celery.dlx"), (role, kind)
        assert not users[role].allows("configure", "celery.dlq"), role
    assert not role_user(BrokerRole.WORKER).permissions.allows("configure", "celery.long"), "only lanes it is given"
