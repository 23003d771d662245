"""The configuration reference (docs/configuration-reference.md), generated from the schema in config.py.

    python -m makemore.reference > docs/configuration-reference.md

Every key of every config group option: its type, default and allowed values from the dataclasses, its help text
from the comment beside the field (or the class's docstring), and the ranges `config.validate` checks, read from
its error messages. tests/test_docs.py fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import MISSING, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from . import config

SOURCE = Path(config.__file__)
COMMAND = "python -m makemore.reference > docs/configuration-reference.md"
GROUPS = {  # group -> its options, as hydra_app.register_configs stores them
    "model": list(config.MODEL_CONFIGS.items()),
    "schedule": [("step", config.StepSchedule), ("cosine", config.CosineSchedule)],
    "optimizer": [("sgd", config.SGDConfig), ("adamw", config.AdamWConfig)],
}
DEFAULTS = {"model": "mlp", "schedule": "step", "optimizer": "sgd"}  # conf/config.yaml's defaults list


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment at the end of the field's line, for every dataclass field in `source`."""
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                target = item.target if isinstance(item, ast.AnnAssign) else getattr(item, "targets", [None])[0]
                if isinstance(target, ast.Name) and item.end_lineno in comments:
                    out[(node.name, target.id)] = comments[item.end_lineno]
    return out


def _render(node: ast.AST) -> str:
    """A message's text: an f-string's literal parts and its fields as `{source}`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = (_render(v) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}" for v in node.values)
        return "".join(parts)
    if isinstance(node, ast.BinOp):  # "a " "b" concatenated over lines
        return _render(node.left) + _render(node.right)
    return ""


def _family(test: ast.AST) -> str | None:
    """ "x" of an `if kind == "x":` test."""
    if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "kind":
        right = test.comparators[0]
        return right.value if isinstance(right, ast.Constant) else None
    if isinstance(test, ast.BoolOp):
        return next((f for f in map(_family, test.values) if f), None)
    return None


def _rule(call: ast.Call, names: dict[str, str]) -> tuple[str, str] | None:
    """(key, what is allowed) from a `_positive_int(value, "key", minimum)` call or a ConfigError message."""
    if call.func.id == "_positive_int" and len(call.args) >= 2:
        key = _render(call.args[1])
        for name, value in names.items():
            key = key.replace("{" + name + "}", value)
        return key, f"integer >= {ast.unparse(call.args[2]) if len(call.args) > 2 else '1'}"
    text = re.sub(r" \(\{[^}]*\}\)", "", _render(call.args[0])) if call.args else ""
    key, _, rule = text.partition(" ")
    rule = rule.split(", got")[0]
    return (key.split("=")[0], rule) if "." in key and "{" not in key + rule else None


def checked_ranges(source: str) -> dict[tuple[str, str | None], list[str]]:
    """(key, family or None) -> what validate allows, from its `_positive_int` calls and its ConfigError messages
    ("key must be ..., got ..."); a rule under `if kind == "x":` holds for model=x only."""
    ranges: dict[tuple[str, str | None], list[str]] = {}

    def visit(node: ast.AST, family: str | None, names: dict[str, list[str]]) -> None:
        if isinstance(node, ast.If):
            family = _family(node.test) or family
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple):
            names = {**names, node.target.id: [_render(e) for e in node.iter.elts]}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RULES:
            for combo in [dict(zip(names, vs)) for vs in zip(*names.values())] if names else [{}]:
                rule = _rule(node, combo)
                if rule and "{" not in rule[0]:
                    ranges.setdefault((rule[0], family), []).append(rule[1])
        for child in ast.iter_child_nodes(node):
            visit(child, family, names)

    visit(ast.parse(source), None, {})
    return ranges


RULES = ("_positive_int", "ConfigError")


def _value(v: Any) -> str:
    if isinstance(v, Enum):
        v = v.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _default(f) -> str:
    if f.default is not MISSING:
        return _value(f.default)
    if f.default_factory is not MISSING:
        return _value(f.default_factory())
    return ""


def _enum(annotation: str) -> type[Enum] | None:
    cls = getattr(config, annotation, None)
    return cls if isinstance(cls, type) and issubclass(cls, Enum) else None


def _member(e: Enum, comments) -> str:
    note = comments.get((type(e).__name__, e.name))
    return f"`{e.value}` ({note})" if note else f"`{e.value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rows(cls: type, prefix: str, comments, ranges, skip: tuple[str, ...] = (), option: str = "") -> list[str]:
    """One table row per field of dataclass `cls` (nested dataclasses flattened under their key)."""
    out = []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in skip:
            continue
        if f.default_factory is not MISSING and is_dataclass(f.default_factory()):
            out += rows(type(f.default_factory()), key + ".", comments, ranges)
            continue
        enum = _enum(str(f.type))
        allowed = [", ".join(_member(e, comments) for e in enum)] if enum else []
        allowed += ranges.get((key, None), []) + (ranges.get((key, option), []) if option else [])
        help_text = comments.get((cls.__name__, f.name), "")
        default = option if f.name == "kind" and option else _default(f)  # hydra_app stores family(kind=option)
        cells = [f"`{key}`", f"`{f.type}`", f"`{default}`", "; ".join(allowed), help_text]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


HEADER = ["| key | type | default | allowed | help |", "|---|---|---|---|---|"]


def render() -> str:
    """The whole page, as committed in docs/configuration-reference.md."""
    source = SOURCE.read_text()
    comments, ranges = field_comments(source), checked_ranges(source)
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the schema (`makemore/config.py`) by `{COMMAND}`; the suite fails when this page is stale.",
        "Every key is a command-line override (`python -m makemore.run model.hidden=300`); a config group is chosen",
        "with `group=option` (`model=wavenet`), and its option's keys then apply. Allowed values: an enum's values,",
        "and the ranges `config.validate` checks before a run starts.",
        "",
        "## Top level, data, train, device, lr_find",
        "",
        *HEADER,
        *rows(config.Config, "", comments, ranges, skip=tuple(GROUPS)),
    ]
    for group, options in GROUPS.items():
        lines += ["", f"## {group}", "", f"Options: {', '.join(f'`{group}={n}`' for n, _ in options)} (default "
                  f"`{group}={DEFAULTS[group]}`)."]  # fmt: skip
        for name, cls in options:
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ and "(" not in cls.__doc__[:1] else ""
            lines += ["", f"### `{group}={name}`", ""] + ([doc, ""] if doc and not doc.startswith(cls.__name__) else [])
            lines += [*HEADER, *rows(cls, f"{group}.", comments, ranges, option=name)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
