"""Pure RabbitMQ configuration rendering, shared by the GKE component and the local harness.

Never imports Pulumi, ``components`` or ``settings`` (an import-linter contract enforces it).
"""

from broker.config import (
    CELERY_INTERNAL_QUEUE_PATTERNS,
    DEFAULT_CONSUMER_TIMEOUT_MS,
    DEFAULT_DISK_FREE_LIMIT_BYTES,
    BrokerConfig,
    PeerDiscovery,
    RabbitVersion,
    TaskQueue,
)
from broker.render import (
    enabled_plugins,
    policy_commands,
    policy_definition,
    rabbitmq_conf_settings,
    render_default_user_conf,
    render_definitions,
    render_definitions_json,
    render_enabled_plugins,
    render_rabbitmq_conf,
)

__all__ = [
    "CELERY_INTERNAL_QUEUE_PATTERNS",
    "DEFAULT_CONSUMER_TIMEOUT_MS",
    "DEFAULT_DISK_FREE_LIMIT_BYTES",
    "BrokerConfig",
    "PeerDiscovery",
    "RabbitVersion",
    "TaskQueue",
    "enabled_plugins",
    "policy_commands",
    "policy_definition",
    "rabbitmq_conf_settings",
    "render_default_user_conf",
    "render_definitions",
    "render_definitions_json",
    "render_enabled_plugins",
    "render_rabbitmq_conf",
]
