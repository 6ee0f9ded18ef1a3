"""LlamaIndex ``MetadataFilters`` translated into vicinity's Mongo-style filter.

vicinity filters metadata with ``$eq $ne $gt $gte $lt $lte $in $nin $and $or``. A missing
field equals ``null``, and a field holding an array matches ``$eq``/``$in`` when any element
does and ``$ne``/``$nin`` when no element does (MongoDB's semantics). That is enough to
express LlamaIndex's comparison and membership operators exactly, and its array operators
``contains``/``any``/``all`` too. What it cannot express (substring matches, ``is_empty``,
negating an ordering comparison) raises :class:`UnsupportedFilterError` instead of being
dropped: a filter silently ignored returns documents the caller meant to exclude.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = [
    "UnsupportedFilterError",
    "to_vicinity_filter",
    "all_of",
    "field_in",
]

Filter = Dict[str, Any]

# The server caps each `$in`/`$nin` list (`--max-filter-values`, 1024 by default); longer id
# lists are split into several `$in` clauses joined by `$or`.
IN_LIST_CHUNK = 1000

_DIRECT = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    # With array semantics, `{"tags": {"$eq": "x"}}` holds when the array contains "x".
    FilterOperator.CONTAINS: "$eq",
    FilterOperator.ANY: "$in",
}

# The exact complement of each operator that has one. A missing field is `null`, so
# `$ne`/`$nin` hold exactly where `$eq`/`$in` do not; the ordering operators have no
# complement (a missing field or a value of another type satisfies neither `$gt` nor `$lte`).
_NEGATED = {
    FilterOperator.EQ: "$ne",
    FilterOperator.NE: "$eq",
    FilterOperator.IN: "$nin",
    FilterOperator.NIN: "$in",
    FilterOperator.CONTAINS: "$ne",
    FilterOperator.ANY: "$nin",
}

# `FilterCondition.NOT` is recent in llama-index-core; older versions simply never send it.
_NOT = getattr(FilterCondition, "NOT", None)

_SUPPORTED = ", ".join(
    op.name
    for op in FilterOperator
    if op in _DIRECT or op is FilterOperator.ALL
)


class UnsupportedFilterError(ValueError):
    """A LlamaIndex filter that vicinity's filter language cannot express."""


def to_vicinity_filter(filters: Optional[MetadataFilters]) -> Optional[Filter]:
    """Translate LlamaIndex filters into a vicinity filter, or ``None`` for no filter.

    Raises :class:`UnsupportedFilterError` for an operator or condition the server cannot
    evaluate exactly. Values are passed through unchanged, so a malformed one (an ``in``
    with a scalar value, say) is refused by the server with ``BadRequestError``
    (code ``bad_filter``).
    """
    if filters is None:
        return None
    clause = _filters(filters, negate=False)
    return clause or None


def all_of(clauses: Iterable[Optional[Filter]]) -> Optional[Filter]:
    """Join clauses with ``$and``, leaving out ``None`` (no restriction)."""
    present = [c for c in clauses if c]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return {"$and": present}


def field_in(field: str, values: Sequence[str]) -> Filter:
    """``field`` is one of ``values``, split into several ``$in`` lists when long."""
    chunks = [
        {field: {"$in": list(values[i : i + IN_LIST_CHUNK])}}
        for i in range(0, len(values), IN_LIST_CHUNK)
    ]
    if len(chunks) == 1:
        return chunks[0]
    return {"$or": chunks}


def _filters(filters: MetadataFilters, negate: bool) -> Filter:
    """One `MetadataFilters` group; an empty dict means "every document"."""
    condition = filters.condition or FilterCondition.AND
    if _NOT is not None and condition == _NOT:
        # NOT holds when none of its filters do: the AND of their negations.
        child_negate, join = not negate, "$and"
    elif condition == FilterCondition.AND:
        child_negate, join = negate, "$and"
    elif condition == FilterCondition.OR:
        child_negate, join = negate, "$or"
    else:
        raise UnsupportedFilterError(f"filter condition {condition!r} is not supported")
    if negate:
        # De Morgan: the negation of an AND is the OR of the negations, and back.
        join = "$or" if join == "$and" else "$and"

    if not filters.filters:
        # An empty group matches every document, and its negation none, which a filter
        # cannot say.
        if negate:
            raise UnsupportedFilterError("the negation of an empty filter group matches nothing")
        return {}

    parts: List[Filter] = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            part = _filters(item, child_negate)
        else:
            part = _filter(item, child_negate)
        if not part:
            # A part matching every document decides an OR and drops out of an AND.
            if join == "$or":
                return {}
            continue
        parts.append(part)
    return _join(join, parts) if parts else {}


def _filter(f: MetadataFilter, negate: bool) -> Filter:
    op = FilterOperator(f.operator)
    if op == FilterOperator.ALL:
        values = _list_value(f)
        if not values:
            raise UnsupportedFilterError(f"filter on {f.key!r}: 'all' needs at least one value")
        if negate:
            # Not every value is present: some value is missing.
            return _join("$or", [{f.key: {"$ne": v}} for v in values])
        return _join("$and", [{f.key: {"$eq": v}} for v in values])

    if op == FilterOperator.ANY:
        _list_value(f)
    table = _NEGATED if negate else _DIRECT
    server_op = table.get(op)
    if server_op is None:
        if negate and op in _DIRECT:
            raise UnsupportedFilterError(
                f"filter on {f.key!r}: {op.name} cannot be negated (under a NOT condition): "
                "vicinity has no $not, and a missing field satisfies neither an ordering "
                "comparison nor its opposite"
            )
        raise UnsupportedFilterError(
            f"filter on {f.key!r}: operator {op.name} is not supported by vicinity "
            f"(supported: {_SUPPORTED})"
        )
    return {f.key: {server_op: f.value}}


def _list_value(f: MetadataFilter) -> List[Any]:
    if not isinstance(f.value, list):
        raise UnsupportedFilterError(
            f"filter on {f.key!r}: operator {FilterOperator(f.operator).name} needs a list value"
        )
    return f.value


def _join(op: str, parts: List[Filter]) -> Filter:
    return parts[0] if len(parts) == 1 else {op: parts}
