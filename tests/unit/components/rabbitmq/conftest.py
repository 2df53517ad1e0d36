"""The whole program's registrations per stack, with their resource options (built once per module)."""

from __future__ import annotations

import pytest

from tests.conftest import STACKS
from tests.unit.components.rabbitmq.helpers import Registered, record


@pytest.fixture(scope="module")
def options() -> dict[str, dict[tuple[str, str], Registered]]:
    """Per stack, every registration of the whole program, with its options."""
    from plan.__main__ import run_program, stack_config

    return {stack: record(stack, run_program, stack_config(stack, [])) for stack in STACKS}
