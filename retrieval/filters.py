"""Metadata filters: one small JSON language, evaluated by the engine (Qdrant Edge or a Qdrant server).

A filter is an object whose keys are ANDed. A key is ``document_id`` or a metadata field; a value is either a
scalar (equality) or an object of operators: ``eq``, ``ne``, ``in`` / ``nin`` (any / none of a list), and the
ranges ``gt``, ``gte``, ``lt``, ``lte``. Two keys combine filters: ``$or`` (a list; at least one must hold) and
``$not`` (a filter that must not hold)::

    {"source": "guide.md", "year": {"gte": 2010}, "tag": {"in": ["a", "b"]},
     "$or": [{"team": "geo"}, {"public": true}], "$not": {"status": "draft"}}

``ne``, ``nin`` and ``$not`` also match documents that lack the key (Qdrant's ``must_not``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from retrieval.errors import InvalidFilterError

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_RANGE_OPS = ("gt", "gte", "lt", "lte")
_OPS = {"eq", "ne", "in", "nin", *_RANGE_OPS}
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    """Operators on one key; every one given must hold."""

    key: str
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    any_of: tuple[Scalar, ...] | None = None
    none_of: tuple[Scalar, ...] | None = None
    ranges: tuple[tuple[str, float], ...] = ()

    def payload_key(self) -> str:
        return "document_id" if self.key == "document_id" else f"meta.{self.key}"


@dataclass(frozen=True)
class MetadataFilter:
    """A parsed filter: all ``conditions``, at least one of ``any_of`` (when given), none of ``none_of``."""

    conditions: tuple[Condition, ...] = ()
    any_of: tuple[MetadataFilter, ...] = ()
    none_of: tuple[MetadataFilter, ...] = ()

    def build(self, api: Any, boolean: Callable[[bool], Any] = bool) -> Any:
        """The equivalent filter object of ``api``: the ``qdrant_edge`` module or ``qdrant_client.models``.

        Both libraries name the filter classes alike; only the float range differs (``RangeFloat`` / ``Range``).
        ``boolean`` wraps boolean match values (Qdrant Edge 0.9 turns a Python ``bool`` into the integer 1 and
        then matches no boolean payload; a ``numpy.bool_`` reaches it as a boolean).
        """
        must: list[Any] = []
        must_not: list[Any] = []
        for c in self.conditions:
            key = c.payload_key()
            if c.equals is not None:
                must.append(_match(api, key, c.equals, boolean))
            if c.not_equals is not None:
                must_not.append(_match(api, key, c.not_equals, boolean))
            if c.any_of is not None:
                must.append(_match_any(api, key, c.any_of, boolean))
            if c.none_of is not None:
                must_not.append(_match_any(api, key, c.none_of, boolean))
            if c.ranges:
                must.append(api.FieldCondition(key=key, range=_range(api, **dict(c.ranges))))
        if self.any_of:
            must.append(api.Filter(should=[f.build(api, boolean) for f in self.any_of]))
        must_not.extend(f.build(api, boolean) for f in self.none_of)
        return api.Filter(must=must or None, must_not=must_not or None)

    def and_(self, other: MetadataFilter | None) -> MetadataFilter:
        """Both filters must hold."""
        if other is None:
            return self
        return MetadataFilter(
            self.conditions + other.conditions, self.any_of + other.any_of, self.none_of + other.none_of
        )


def _range(api: Any, **bounds: float) -> Any:
    cls = getattr(api, "RangeFloat", None) or api.Range
    return cls(**bounds)


def _match(api: Any, key: str, value: Scalar, boolean: Callable[[bool], Any]) -> Any:
    if isinstance(value, bool):
        return api.FieldCondition(key=key, match=api.MatchValue(value=boolean(value)))
    if isinstance(value, float):
        # Qdrant matches exact values on keywords, integers and booleans only; a float is a closed range.
        return api.FieldCondition(key=key, range=_range(api, gte=value, lte=value))
    return api.FieldCondition(key=key, match=api.MatchValue(value=value))


def _match_any(api: Any, key: str, values: tuple[Scalar, ...], boolean: Callable[[bool], Any]) -> Any:
    strings = all(isinstance(v, str) for v in values)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if strings or ints:
        return api.FieldCondition(key=key, match=api.MatchAny(any=list(values)))
    # Mixed types, floats or booleans: one exact match each, any of them.
    return api.Filter(should=[_match(api, key, v, boolean) for v in values])


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidFilterError(f"filter {where}: expected a string, number or boolean", param=f"filter.{where}")


def _list(value: Any, key: str, op: str) -> tuple[Scalar, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidFilterError(f"filter {key}.{op}: expected a non-empty list", param=f"filter.{key}")
    return tuple(_scalar(v, key) for v in value)


def _condition(key: str, value: Any) -> Condition:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidFilterError(f"invalid filter key {key!r}", param="filter")
    if not isinstance(value, Mapping):
        return Condition(key=key, equals=_scalar(value, key))
    if not value:
        raise InvalidFilterError(f"filter {key}: empty condition", param=f"filter.{key}")
    unknown = set(value) - _OPS
    if unknown:
        raise InvalidFilterError(
            f"filter {key}: unknown operator(s) {sorted(unknown)}; use {', '.join(sorted(_OPS))}",
            param=f"filter.{key}",
        )
    ranges = []
    for op in _RANGE_OPS:
        if op in value:
            bound = value[op]
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise InvalidFilterError(f"filter {key}.{op}: expected a number", param=f"filter.{key}")
            ranges.append((op, float(bound)))
    return Condition(
        key=key,
        equals=_scalar(value["eq"], key) if "eq" in value else None,
        not_equals=_scalar(value["ne"], key) if "ne" in value else None,
        any_of=_list(value["in"], key, "in") if "in" in value else None,
        none_of=_list(value["nin"], key, "nin") if "nin" in value else None,
        ranges=tuple(ranges),
    )


def _parse(raw: Any, where: str) -> MetadataFilter:
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidFilterError(f"{where} must be a non-empty object", param=where)
    conditions: list[Condition] = []
    any_of: tuple[MetadataFilter, ...] = ()
    none_of: tuple[MetadataFilter, ...] = ()
    for key, value in raw.items():
        if key == "$or":
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(f"{where}.$or: expected a non-empty list of filters", param=where)
            any_of = tuple(_parse(v, f"{where}.$or") for v in value)
        elif key == "$not":
            none_of = (_parse(value, f"{where}.$not"),)
        else:
            conditions.append(_condition(key, value))
    return MetadataFilter(tuple(conditions), any_of, none_of)


def parse_filter(raw: Mapping[str, Any] | None) -> MetadataFilter | None:
    """Validate a filter object.

    Raises:
        InvalidFilterError: unknown operator, bad key or value type.
    """
    if not raw:
        return None
    return _parse(raw, "filter")
