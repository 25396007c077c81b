"""Metadata filters: one small JSON language, evaluated in-process (embedded) or translated to Qdrant (server).

A filter is an object whose keys are ANDed. A key is ``document_id`` or a metadata field; a value is either a
scalar (equality) or an object with ``in`` (any of a list) and/or the range operators ``gt``, ``gte``, ``lt``,
``lte``::

    {"source": "guide.md", "year": {"gte": 2010}, "tag": {"in": ["a", "b"]}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrieval.errors import InvalidFilterError

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_RANGE_OPS = ("gt", "gte", "lt", "lte")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    key: str
    equals: Scalar | None = None
    any_of: tuple[Scalar, ...] | None = None
    ranges: tuple[tuple[str, float], ...] = ()

    def payload_key(self) -> str:
        return "document_id" if self.key == "document_id" else f"meta.{self.key}"

    def matches(self, document_id: str, meta: Mapping[str, Any]) -> bool:
        value = document_id if self.key == "document_id" else meta.get(self.key)
        if value is None:
            return False
        if self.equals is not None and value != self.equals:
            return False
        if self.any_of is not None and value not in self.any_of:
            return False
        for op, bound in self.ranges:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if not _compare(op, float(value), bound):
                return False
        return True


def _compare(op: str, value: float, bound: float) -> bool:
    if op == "gt":
        return value > bound
    if op == "gte":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound


@dataclass(frozen=True)
class MetadataFilter:
    """Parsed filter; all conditions must hold."""

    conditions: tuple[Condition, ...]

    def matches(self, document_id: str, meta: Mapping[str, Any]) -> bool:
        return all(c.matches(document_id, meta) for c in self.conditions)

    def to_qdrant(self) -> Any:
        """The equivalent ``qdrant_client.models.Filter``."""
        from qdrant_client import models

        must: list[Any] = []
        for c in self.conditions:
            key = c.payload_key()
            if c.equals is not None:
                must.append(models.FieldCondition(key=key, match=models.MatchValue(value=c.equals)))  # type: ignore[arg-type]
            if c.any_of is not None:
                must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(c.any_of))))  # type: ignore[arg-type]
            if c.ranges:
                must.append(models.FieldCondition(key=key, range=models.Range(**dict(c.ranges))))
        return models.Filter(must=must)


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidFilterError(f"filter {where}: expected a string, number or boolean", param=f"filter.{where}")


def parse_filter(raw: Mapping[str, Any] | None) -> MetadataFilter | None:
    """Validate a filter object.

    Raises:
        InvalidFilterError: unknown operator, bad key or value type.
    """
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidFilterError("filter must be an object", param="filter")
    conditions: list[Condition] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InvalidFilterError(f"invalid filter key {key!r}", param="filter")
        if not isinstance(value, Mapping):
            conditions.append(Condition(key=key, equals=_scalar(value, key)))
            continue
        if not value:
            raise InvalidFilterError(f"filter {key}: empty condition", param=f"filter.{key}")
        unknown = set(value) - {"in", "eq", *_RANGE_OPS}
        if unknown:
            raise InvalidFilterError(
                f"filter {key}: unknown operator(s) {sorted(unknown)}; use eq, in, gt, gte, lt, lte",
                param=f"filter.{key}",
            )
        any_of = None
        if "in" in value:
            items = value["in"]
            if not isinstance(items, list) or not items:
                raise InvalidFilterError(f"filter {key}.in: expected a non-empty list", param=f"filter.{key}")
            any_of = tuple(_scalar(v, key) for v in items)
        ranges = []
        for op in _RANGE_OPS:
            if op in value:
                bound = value[op]
                if isinstance(bound, bool) or not isinstance(bound, int | float):
                    raise InvalidFilterError(f"filter {key}.{op}: expected a number", param=f"filter.{key}")
                ranges.append((op, float(bound)))
        equals = _scalar(value["eq"], key) if "eq" in value else None
        conditions.append(Condition(key=key, equals=equals, any_of=any_of, ranges=tuple(ranges)))
    return MetadataFilter(tuple(conditions))
