"""The dev plan booted once for every module here (RabbitMQ 4.3 StatefulSet, worker Deployment).

Their faults (a broker container killed or frozen, a scheduler killed, every broker powered off
for minutes, tasks dead-lettered) leave a cluster that comes back: each test starts from
``Booted.clean`` (every pod Ready, the task queue empty). A package, not a session, fixture: the
cluster is stopped once the last module here ran, before any other module boots its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.dlq import dead_letter_channel
from contract.wire import DEAD_LETTER_QUEUE, BrokerRole
from drill.runner import booted_plan
from drill.targets import broker_urls
from tests.conftest import Plan
from tests.drills.conftest import Booted


@pytest.fixture(scope="package")
def booted(plans: dict[str, Plan]) -> Iterator[Booted]:
    # No Prometheus: these tests dead-letter tasks on purpose, and its alerts are the drills' subject.
    with booted_plan(plans["dev"].directory, observe=False) as (target, results):
        yield Booted(target, results)


@pytest.fixture
def fresh(booted: Booted) -> Booted:
    """Every pod Ready, both queues empty, no record left from an earlier test."""
    booted.clean()
    with dead_letter_channel(broker_urls(booted.target.cluster, BrokerRole.WORKER)) as channel:
        channel.queue_purge(DEAD_LETTER_QUEUE)
    return booted
