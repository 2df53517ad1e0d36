"""The stack-file front door: values as Pulumi stores them, broken files named with their line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plan import stackfile
from plan.stackfile import StackFileError


def read(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text(text)
    return stackfile.read(path)


def test_scalars_keep_their_text_not_yaml_1_1_types(tmp_path: Path) -> None:
    config = read(
        tmp_path,
        "config:\n"
        "  ha-celery:kubernetesVersion: 1.30\n"
        "  ha-celery:maintenanceWindow: 13:00\n"
        "  ha-celery:spotNodes: yes\n"
        "  ha-celery:nodeCount: 3\n"
        "  ha-celery:brokerTls: true\n"
        "  ha-celery:prometheusNamespace:\n"
        '  ha-celery:schedulerRun: "007"\n',
    )
    assert config == {
        "ha-celery:kubernetesVersion": "1.30",
        "ha-celery:maintenanceWindow": "13:00",
        "ha-celery:spotNodes": "yes",  # settings refuse it for a boolean: true | false
        "ha-celery:nodeCount": "3",
        "ha-celery:brokerTls": "true",
        "ha-celery:prometheusNamespace": "",
        "ha-celery:schedulerRun": "007",
    }


def test_lists_become_json_typed_as_yaml_1_2(tmp_path: Path) -> None:
    config = read(tmp_path, 'config:\n  ha-celery:nodeZones: [us-east1-b, 1.30, yes, "1", null]\n')
    assert config == {"ha-celery:nodeZones": '["us-east1-b", 1.3, "yes", "1", null]'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("config:\n\tha-celery:nodeCount: 3\n", "Pulumi.x.yaml line 2, column 1: found character '\\t'"),
        ("- a\n- b\n", "Pulumi.x.yaml line 1: the top level must be a map (config:, ...), not a list"),
        ("config:\n  - ha-celery:nodeCount\n", "Pulumi.x.yaml line 2: config: must be a map of key: value, not a list"),
        ("config: 3\n", "Pulumi.x.yaml line 1: config: must be a map of key: value, not text"),
        ("config: [\n", "Pulumi.x.yaml line 2, column 1: expected the node content"),
        ("config:\n  a: 1\n  a: 2\n", "Pulumi.x.yaml line 3: 'a' is given twice (first on line 2)"),
        (
            "config:\n  ha-celery:nodeZones: [a, a]\n  ha-celery:nodeZones: []\n",
            "Pulumi.x.yaml line 3: 'ha-celery:nodeZones' is",
        ),
        ("config: {}\n---\nconfig: {}\n", "Pulumi.x.yaml line 3: a second YAML document"),
        (
            "config:\n  x: &a [1]\n  y: *a\n",
            "Pulumi.x.yaml line 3, column 6: an alias (*name): a stack file takes none",
        ),
        ("config:\n  [a]: 1\n", "Pulumi.x.yaml line 2: a key must be a name, not a list, a map or null"),
    ],
    ids=["tab", "top-list", "config-list", "config-scalar", "broken", "dup", "dup-list", "two-docs", "alias", "key"],
)
def test_a_broken_stack_file_is_named_with_its_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(StackFileError) as error:
        read(tmp_path, text)
    assert str(error.value).startswith(expected), str(error.value)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    started = time.process_time()
    with pytest.raises(StackFileError, match="an alias"):
        read(tmp_path, "\n".join(lines) + "\nconfig:\n  x: *a11\n")
    assert time.process_time() - started < 5  # CPU time of a 5^11-leaf expansion would be minutes


def test_a_huge_or_binary_stack_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match=r"Pulumi.x.yaml: 1048577 bytes; a stack file has at most 1048576"):
        read(tmp_path, "#" * (stackfile.MAX_STACK_FILE_BYTES + 1))
    path = tmp_path / "Pulumi.x.yaml"
    path.write_bytes(b"config:\n  a: \xff\n")
    with pytest.raises(StackFileError, match="not UTF-8 text"):
        stackfile.read(path)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match=r"nested too deeply|Pulumi\.x\.yaml line"):
        read(tmp_path, "config:\n  a: " + "[" * 100_000 + "\n")


def test_an_empty_file_or_config_is_no_config(tmp_path: Path) -> None:
    assert read(tmp_path, "") == {}
    assert read(tmp_path, "config:\n") == {}
    assert read(tmp_path, "encryptionsalt: x\n") == {}
