"""The broker's users and secrets: the cookie file, the generated passwords, the monitoring user's URL."""

from __future__ import annotations

import contextvars

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    Registered,
    broker_config_map,
    dev_args,
    pod,
)


def test_cookie_is_a_file_and_credentials_a_secret(plan: Plan) -> None:
    volumes = {v["name"]: v for v in pod(plan)["volumes"]}
    cookie = volumes["erlang-cookie-secret"]["secret"]
    cookie_secret = [s for s in plan.objects("Secret") if s["metadata"]["name"] == cookie["secretName"]]
    assert cookie_secret
    assert ".erlang.cookie" in cookie_secret[0]["stringData"]
    sources = volumes["rabbitmq-confd-source"]["projected"]["sources"]
    assert any("secret" in s for s in sources), "the default user comes from a Secret"
    conf_map = broker_config_map(plan)["data"]
    assert "default_pass" not in "".join(conf_map.values())


def test_generated_password_and_cookie_are_never_replaced_by_an_input_change(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    generated = {n: r for (t, n), r in options[plan.stack].items() if t == "random:index/randomPassword:RandomPassword"}
    roles = {f"rabbitmq-{role}-password" for role in ("worker", "scheduler", "monitoring")}
    assert set(generated) == {"rabbitmq-password", "rabbitmq-erlang-cookie", *roles}
    for name, registered in generated.items():
        # Every input of RandomPassword forces a new value; the registered ones (camelCase) and the rest.
        assert set(registered.inputs) <= set(registered.ignore_changes), name
        assert {"length", "special", "keepers", "overrideSpecial", "minUpper"} <= set(registered.ignore_changes), name
        assert not registered.protect, f"{name}: protect would block `pulumi destroy` of dev"


def test_the_management_url_logs_in_as_the_monitoring_user_with_its_own_password() -> None:
    """KEDA's trigger reads queue depth with this URL. The plan masks it and the local harness
    rebuilds it from its own rules (harness/kube/secretfill.py), so only the component's real
    output shows which user it names."""
    import pulumi
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from components.rabbitmq import RabbitMQCluster
    from contract.wire import BrokerRole, management_url, role_secret_name, role_username
    from plan.mocks import RecordingMocks
    from settings import PROJECT

    args = dev_args()
    urls: list[str] = []

    def run() -> RecordingMocks:
        mocks = RecordingMocks()
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="dev", preview=False)

        def program() -> None:
            RabbitMQCluster("rabbitmq", args).management_url.apply(urls.append)

        _sync_await(run_pulumi_func(program))
        return mocks

    mocks = contextvars.copy_context().run(run)
    [secret] = [
        r.inputs
        for r in mocks.registrations
        if r.type == "kubernetes:core/v1:Secret"
        and r.inputs["metadata"]["name"] == role_secret_name("rabbitmq", BrokerRole.MONITORING)
    ]
    data = secret["stringData"]["value"]  # the engine's secret wrapper: the component marked it secret
    user, password = data["username"], data["password"]
    assert user == role_username(BrokerRole.MONITORING)
    assert urls == [management_url(user, password, "rabbitmq", "ha-celery")]
