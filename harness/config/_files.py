"""YAML files and `--set KEY=VALUE` overrides: parsed safely, every problem naming the file and
line, or the override as given; `harness.config` validates what these return.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError


class _UniqueKeys(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping: plain YAML keeps the last
    silently, so a second `study:` section would quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
            if key == "labels" and isinstance(value_node, yaml.SequenceNode):
                for item in value_node.value:  # `labels: [01, 010]`: codes, kept as the data has
                    if item.tag == _INT and _ZERO_PADDED.fullmatch(str(item.value)):
                        item.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)

    def construct_decimal(self, node: yaml.ScalarNode) -> Any:
        """`010` is 10: YAML 1.1 reads a leading zero as octal (8), which no config means
        (`batch_size: 016` was 14)."""
        value = self.construct_scalar(node)
        if isinstance(value, str) and _ZERO_PADDED.fullmatch(value):
            return int(value.replace("_", ""), 10)
        return self.construct_yaml_int(node)


_INT = "tag:yaml.org,2002:int"
_ZERO_PADDED = re.compile(r"[-+]?0[0-9_]+")
_UniqueKeys.add_constructor(_INT, _UniqueKeys.construct_decimal)


def read_yaml(path: Path) -> Any:
    """Parse YAML safely; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # saved as latin-1 or cp1252, say
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} does not "
            "decode); save it as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeys)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """Where the YAML went wrong: the construct left open (an unclosed `[`) where there is one,
    since the parser notices only on a later line."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = getattr(exc, "context", None) or "while parsing"
        return (
            f"{path}:{context_mark.line + 1}:{context_mark.column + 1}: invalid YAML ({context} "
            f"opened here: {problem} on line {mark.line + 1})"
        )
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return f"{path}{where}: invalid YAML ({problem})"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides to a copy of the raw config; values are parsed as YAML."""
    result: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. study.n_trials=4")
        node = result
        parts = _key_parts(key.strip(), item)
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = _parse_value(parts[-1], value)
        except yaml.YAMLError:
            node[parts[-1]] = value
    return result


def _parse_value(key: str, value: str) -> Any:
    """A `--set` value as YAML, read as the same value in a file would be (`labels` keeps its
    zero-padded codes)."""
    if not value.strip():
        return None
    if key == "labels":
        return yaml.load(f"labels: {value}", Loader=_UniqueKeys)["labels"]
    return yaml.load(value, Loader=_UniqueKeys)


def _key_parts(key: str, item: str) -> list[str]:
    """`backend.prices."org/model-3.1".x` -> backend, prices, org/model-3.1, x: a part in double
    quotes may hold dots, as model names do."""
    parts, current, quoted = [], "", False
    for char in key:
        if char == '"':
            quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if quoted or not all([*parts, current]):
        raise ConfigError(
            f"--set {item!r}: expected KEY=VALUE with KEY parts joined by dots (a part that holds "
            'a dot in double quotes: backend.prices."org/model-3.1".input_per_1m=0.5)'
        )
    return [*parts, current]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
