"""fill_secrets: masked values replaced through rules, derived keys, refusals."""

from __future__ import annotations

import random

import pytest

from drill.plan_secrets import ha_celery_rules
from harness.kube.objects import Plan, Secret
from harness.kube.secretfill import (
    ALNUM,
    SecretFillError,
    fill_secrets,
    rules_generator,
)

M = b"[secret]"


def plan() -> Plan:
    return Plan(
        secrets=[
            Secret(
                "rabbitmq-default-user",
                "ha-celery",
                {"default_user.conf": M, "password": M, "username": M},
                frozenset({"default_user.conf", "password", "username"}),
            ),
            Secret("rabbitmq-erlang-cookie", "ha-celery", {".erlang.cookie": M}, frozenset({".erlang.cookie"})),
        ]
    )


def test_ha_celery_rules_rebuild_the_cloud_secrets() -> None:
    filled = fill_secrets(plan(), rules_generator(ha_celery_rules(random.Random(1))))
    user = filled.secret("rabbitmq-default-user")
    cookie = filled.secret("rabbitmq-erlang-cookie")
    assert user is not None
    assert cookie is not None
    assert not user.masked
    assert not cookie.masked
    password = user.data["password"].decode()
    assert len(password) == 32
    assert set(password) <= set(ALNUM)
    assert user.data["username"] == b"celery"
    assert user.data["default_user.conf"].decode() == f"default_user = celery\ndefault_pass = {password}\n"
    value = cookie.data[".erlang.cookie"].decode()
    assert len(value) == 64
    assert set(value) <= set(ALNUM)


def test_reproducible_with_seed_and_random_without() -> None:
    a = fill_secrets(plan(), rules_generator(ha_celery_rules(random.Random(7))))
    b = fill_secrets(plan(), rules_generator(ha_celery_rules(random.Random(7))))
    c = fill_secrets(plan(), rules_generator(ha_celery_rules()))
    assert a.secrets == b.secrets
    assert a.secrets != c.secrets


def test_unmasked_values_are_kept_and_visible_to_rules() -> None:
    p = Plan(secrets=[Secret("s", "ns", {"user": b"bob", "conf": M}, frozenset({"conf"}))])
    filled = fill_secrets(p, rules_generator({("s", "conf"): lambda look: "user=" + look("s", "user")}))
    assert filled.secrets[0].data == {"user": b"bob", "conf": b"user=bob"}


def test_masked_value_without_rule_is_refused() -> None:
    rules = ha_celery_rules()
    del rules[("rabbitmq-erlang-cookie", ".erlang.cookie")]
    with pytest.raises(SecretFillError, match=r"secret 'rabbitmq-erlang-cookie' key '\.erlang\.cookie'"):
        fill_secrets(plan(), rules_generator(rules))


def test_cycle_and_missing_key_are_refused() -> None:
    p = Plan(secrets=[Secret("s", "ns", {"a": M, "b": M}, frozenset({"a", "b"}))])
    cyc = rules_generator({("s", "a"): lambda look: look("s", "b"), ("s", "b"): lambda look: look("s", "a")})
    with pytest.raises(SecretFillError, match="cycle: s/a -> s/b -> s/a"):
        fill_secrets(p, cyc)
    missing = rules_generator({("s", "a"): lambda look: look("s", "zzz"), ("s", "b"): lambda _: "x"})
    with pytest.raises(SecretFillError, match="no key 'zzz'"):
        fill_secrets(p, missing)


def test_generator_sees_name_and_key() -> None:
    seen: list[tuple[str, str]] = []

    def gen(name: str, key: str, _look: object) -> str:
        seen.append((name, key))
        return f"{name}/{key}"

    filled = fill_secrets(plan(), gen)
    assert sorted(seen) == sorted(
        [
            ("rabbitmq-default-user", "default_user.conf"),
            ("rabbitmq-default-user", "password"),
            ("rabbitmq-default-user", "username"),
            ("rabbitmq-erlang-cookie", ".erlang.cookie"),
        ]
    )
    assert filled.secrets[1].data[".erlang.cookie"] == b"rabbitmq-erlang-cookie/.erlang.cookie"
