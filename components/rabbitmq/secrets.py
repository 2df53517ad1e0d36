"""Users and secrets: the administrator's password, the Erlang cookie, one user per client role."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from broker.render import render_default_user_conf
from components.rabbitmq import meta
from contract.wire import (
    BROKER_USERNAME,
    DEFAULT_USER_SECRET,
    ERLANG_COOKIE_SECRET,
    BrokerRole,
    child_name,
    management_url,
    role_secret_name,
    role_username,
)

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

RANDOM_PASSWORD_INPUTS = (
    "length",
    "keepers",
    "lower",
    "min_lower",
    "min_numeric",
    "min_special",
    "min_upper",
    "number",
    "numeric",
    "override_special",
    "special",
    "upper",
)
"""Every input of random.RandomPassword; each one forces a new value when it changes."""
CREDENTIALS_CHECKSUM_ANNOTATION = "ha-celery/credentials-sha256"
"""Pod template annotation: which passwords (and, on the brokers, which cookie) the pods read at
start, as a one-way digest (meta.output_digest): a rotation (`pulumi up --replace` of a
RandomPassword) updates the Secret in place and rolls the pods that read it, one at a time."""


def passwords(name: str, child: pulumi.ResourceOptions) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    # A new value would lock everybody out: default_user/default_pass act on a blank node only, so
    # the broker keeps the old password while the Secret gets the new one; a new cookie keeps
    # restarted pods out of the cluster. So no input change may replace them. Not `protect`:
    # that blocks `pulumi destroy` of dev. A deliberate rotation is `pulumi up --replace <urn>`
    # plus `rabbitmqctl change_password` (docs/operate-broker.md, "Rotating credentials and certificates").
    keep = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=list(RANDOM_PASSWORD_INPUTS)))
    # No special characters: the password goes into AMQP URLs and a conf file verbatim.
    password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=keep)
    cookie = random.RandomPassword(f"{name}-erlang-cookie", length=64, special=False, opts=keep)
    return pulumi.Output.secret(password.result), pulumi.Output.secret(cookie.result)


def secrets(
    name: str,
    args: RabbitMQClusterArgs,
    password: pulumi.Output[str],
    cookie: pulumi.Output[str],
    child: pulumi.ResourceOptions,
) -> tuple[k8s.core.v1.Secret, k8s.core.v1.Secret]:
    user_secret = k8s.core.v1.Secret(
        f"{name}-default-user",
        metadata=meta.metadata(child_name(args.name, DEFAULT_USER_SECRET), args),
        type="Opaque",
        string_data={
            "username": BROKER_USERNAME,
            "password": password,
            # Read by RabbitMQ from conf.d: the user exists from the first boot, and the
            # password never appears in the ConfigMap. Setting default_user also means no
            # guest user is created at all.
            "default_user.conf": password.apply(lambda p: render_default_user_conf(BROKER_USERNAME, p)),
        },
        opts=child,
    )
    cookie_secret = k8s.core.v1.Secret(
        f"{name}-erlang-cookie",
        metadata=meta.metadata(child_name(args.name, ERLANG_COOKIE_SECRET), args),
        type="Opaque",
        string_data={".erlang.cookie": cookie},
        opts=child,
    )
    return user_secret, cookie_secret


def role_passwords(name: str, child: pulumi.ResourceOptions) -> dict[BrokerRole, pulumi.Output[str]]:
    # Kept like the default password (see passwords): the broker pods take a new value only when
    # they restart (their postStart hook), so a replaced one would lock the clients out until then.
    keep = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=list(RANDOM_PASSWORD_INPUTS)))
    return {
        role: pulumi.Output.secret(
            random.RandomPassword(f"{name}-{role.value}-password", length=32, special=False, opts=keep).result
        )
        for role in BrokerRole
    }


def role_secrets(
    name: str, args: RabbitMQClusterArgs, passwords: dict[BrokerRole, pulumi.Output[str]], child: pulumi.ResourceOptions
) -> dict[BrokerRole, k8s.core.v1.Secret]:
    """One Secret per role: a pod mounts the one of its own role, never another's or the admin's."""
    return {
        role: k8s.core.v1.Secret(
            f"{name}-{role.value}-user",
            metadata=meta.metadata(role_secret_name(args.name, role), args),
            type="Opaque",
            string_data={"username": role_username(role), "password": password},
            opts=child,
        )
        for role, password in passwords.items()
    }


def monitoring_url(args: RabbitMQClusterArgs, password: pulumi.Output[str]) -> pulumi.Output[str]:
    """The monitoring user's URL (KEDA's trigger logs in with it): ``password`` must be that user's."""
    url = pulumi.Output.all(password, args.namespace).apply(
        lambda values: management_url(role_username(BrokerRole.MONITORING), str(values[0]), args.name, str(values[1]))
    )
    return pulumi.Output.secret(url)
