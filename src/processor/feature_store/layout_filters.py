"""`layout_filters`: which checkpoint shards this instance loads, e.g. "ps_{i}; i % 2 == 1".

A filter is a name pattern with named integer fields in braces, a ';', and a condition over those
fields. A shard whose name matches the pattern is kept when the condition holds. The condition is
parsed with Python's `ast` and evaluated by a small interpreter that allows only integer literals,
the pattern's field names, + - * // %, comparisons, and/or/not: no calls, attributes or other names,
so a config can never run code.
"""
from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List

from ..errors import ConfigError

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z_0-9]*)\}")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


@dataclass(frozen=True)
class LayoutFilter:
    text: str
    pattern: "re.Pattern[str]"
    fields: tuple
    condition: ast.expr

    def keeps(self, name: str) -> bool:
        """Whether the shard `name` matches the pattern and satisfies the condition."""
        match = self.pattern.search(name)
        if not match:
            return False
        values = {field: int(match.group(field)) for field in self.fields}
        return bool(_evaluate(self.condition, values, self.text))


def parse_layout_filter(text: str, field_name: str = "layout_filters") -> LayoutFilter:
    if not isinstance(text, str) or ";" not in text:
        raise ConfigError(field_name, f"must be 'PATTERN; CONDITION' like \"ps_{{i}}; i % 2 == 1\", got {text!r}")
    pattern_text, condition_text = (part.strip() for part in text.split(";", 1))
    fields = tuple(_FIELD.findall(pattern_text))
    if not fields:
        raise ConfigError(field_name, f"the pattern {pattern_text!r} names no {{field}}")
    if len(set(fields)) != len(fields):
        raise ConfigError(field_name, f"the pattern {pattern_text!r} names a field twice")
    regex, last = "", 0
    for match in _FIELD.finditer(pattern_text):
        regex += re.escape(pattern_text[last:match.start()]) + f"(?P<{match.group(1)}>\\d+)"
        last = match.end()
    regex += re.escape(pattern_text[last:]) + r"(?![0-9])"
    try:
        condition = ast.parse(condition_text, mode="eval").body
    except SyntaxError as e:
        raise ConfigError(field_name, f"the condition {condition_text!r} is not an expression: {e.msg}") from None
    _check(condition, set(fields), text, field_name)
    return LayoutFilter(text, re.compile(regex), fields, condition)


def select_shards(names: Iterable[str], filters: Iterable[LayoutFilter]) -> List[str]:
    """The shards at least one filter keeps (all of them when there is no filter)."""
    filters = list(filters)
    return [name for name in names if not filters or any(f.keeps(name) for f in filters)]


def _check(node: ast.AST, fields: set, text: str, field_name: str) -> None:
    allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp, ast.Compare, ast.Name,
               ast.Load, ast.Constant, *_BINARY, *_COMPARE)
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            raise ConfigError(field_name, f"{text!r}: {type(child).__name__} is not allowed in a condition "
                                          f"(integers, the pattern's fields, + - * // %, comparisons, and/or/not)")
        if isinstance(child, ast.Name) and child.id not in fields:
            raise ConfigError(field_name, f"{text!r}: the condition uses '{child.id}', which the pattern does not name")
        if isinstance(child, ast.Constant) and (not isinstance(child.value, int) or isinstance(child.value, bool)):
            raise ConfigError(field_name, f"{text!r}: only integer constants are allowed, got {child.value!r}")


def _evaluate(node: ast.expr, values: Dict[str, int], text: str):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values, text)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values, text), _evaluate(node.right, values, text)
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
            return False  # a shard the condition cannot decide is not loaded
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.BoolOp):
        results = (_evaluate(v, values, text) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values, text)
        for op, comparator in zip(node.ops, node.comparators):
            right = _evaluate(comparator, values, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise AssertionError(f"unchecked node {type(node).__name__} in {text!r}")  # _check admits nothing else
