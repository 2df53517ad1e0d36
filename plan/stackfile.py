"""A stack file's config as the Pulumi CLI hands it to the program: every value a string.

Pulumi reads Pulumi.<stack>.yaml with a YAML 1.2 parser and stores each scalar as its text, so
``kubernetesVersion: 1.30`` is "1.30", ``maintenanceWindow: 13:00`` is "13:00" and
``spotNodes: yes`` is "yes" (which settings then refuse for a boolean). PyYAML's loaders follow
YAML 1.1 (1.3, 780, true), so this module composes the document and reads the nodes itself.
Lists and maps become JSON, as Pulumi passes structured values. Refused with the file and line:
broken YAML, tabs, several documents, aliases (an alias bomb expands to gigabytes), duplicate
keys, a top level or a ``config:`` that is not a map, a file over 1 MiB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MAX_STACK_FILE_BYTES = 1 << 20
"""A stack file is a few dozen lines; a bigger one is a mistake, not a configuration."""

# YAML 1.2 core schema for plain scalars inside lists and maps (what Pulumi's parser resolves).
_NULL = re.compile(r"(?:~|null|Null|NULL)?")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")


class StackFileError(ValueError):
    """The stack file cannot be read as a Pulumi stack file; the message names the file and line."""


class _Loader(yaml.SafeLoader):
    """Composes nodes only (no YAML 1.1 typing) and refuses aliases before anything expands them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "an alias (*name): a stack file takes none", mark)
        return super().compose_node(parent, index)


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path.name} line {node.start_mark.line + 1}"


def _kind(node: yaml.Node) -> str:
    return (
        "a list" if isinstance(node, yaml.SequenceNode) else "a map" if isinstance(node, yaml.MappingNode) else "text"
    )


def _pairs(path: Path, node: yaml.MappingNode) -> list[tuple[str, yaml.Node]]:
    """A map's (key, value) pairs, refusing keys that are not strings and keys given twice."""
    seen: dict[str, int] = {}
    pairs = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or (key_node.style is None and _NULL.fullmatch(key_node.value)):
            raise StackFileError(f"{_where(path, key_node)}: a key must be a name, not a list, a map or null")
        key = key_node.value
        if key in seen:
            raise StackFileError(
                f"{_where(path, key_node)}: {key[:80]!r} is given twice (first on line {seen[key]}): keep one (the"
                " CLI refuses the file; a YAML 1.1 reader would keep the last silently)"
            )
        seen[key] = key_node.start_mark.line + 1
        pairs.append((key, value_node))
    return pairs


def _plain(path: Path, node: yaml.Node) -> Any:
    """A value inside a list or map, typed as YAML 1.2 would (the JSON Pulumi passes keeps the types)."""
    if isinstance(node, yaml.MappingNode):
        return {key: _plain(path, value) for key, value in _pairs(path, node)}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(path, item) for item in node.value]
    assert isinstance(node, yaml.ScalarNode)
    text: str = node.value
    if node.style is not None:  # quoted or a block scalar: a string
        return text
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return int(text) if len(text) <= 18 else text
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _as_config_value(path: Path, node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        # Pulumi stores a scalar's text: an empty value or "~" is the empty string.
        return "" if node.style is None and _NULL.fullmatch(node.value) else str(node.value)
    return json.dumps(_plain(path, node))


def _document(path: Path) -> yaml.Node | None:
    size = path.stat().st_size
    if size > MAX_STACK_FILE_BYTES:
        raise StackFileError(f"{path.name}: {size} bytes; a stack file has at most {MAX_STACK_FILE_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise StackFileError(f"{path.name}: not UTF-8 text (byte {error.start})") from error
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path.name} line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        problem = error.problem or error.context or "not YAML"
        hint = " (YAML indents with spaces, never tabs)" if "\t" in text and "'\\t'" in str(error) else ""
        raise StackFileError(f"{where}: {problem}{hint}") from error
    except yaml.YAMLError as error:  # the reader's: a control character, a broken encoding
        position = getattr(error, "position", None)
        where = f"{path.name} character {position}" if position is not None else path.name
        raise StackFileError(
            f"{where}: {getattr(error, 'reason', 'not YAML')} (YAML refuses control characters)"
        ) from error
    except RecursionError as error:
        raise StackFileError(f"{path.name}: nested too deeply to be a stack file") from error
    if len(documents) > 1:
        raise StackFileError(f"{_where(path, documents[1])}: a second YAML document; a stack file is one map")
    return documents[0] if documents else None


def read(path: Path) -> dict[str, str]:
    """The ``config:`` map of the stack file at ``path``: key -> the string Pulumi would pass."""
    root = _document(path)
    if root is None or (isinstance(root, yaml.ScalarNode) and _NULL.fullmatch(root.value)):
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise StackFileError(f"{_where(path, root)}: the top level must be a map (config:, ...), not {_kind(root)}")
    config = dict(_pairs(path, root)).get("config")
    if config is None or (isinstance(config, yaml.ScalarNode) and _NULL.fullmatch(config.value)):
        return {}
    if not isinstance(config, yaml.MappingNode):
        raise StackFileError(f"{_where(path, config)}: config: must be a map of key: value, not {_kind(config)}")
    return {key: _as_config_value(path, value) for key, value in _pairs(path, config)}
