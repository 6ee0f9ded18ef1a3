"""The translation of LlamaIndex filters into vicinity's filter, without a server.

What the translated filters select is checked against a live server in
`test_vector_store.py`; here, the exact JSON, and the refusals.
"""

import pytest
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from llama_index.vector_stores.vicinity import UnsupportedFilterError, to_vicinity_filter
from llama_index.vector_stores.vicinity.filters import IN_LIST_CHUNK, all_of, field_in


def f(key, value, op=FilterOperator.EQ):
    return MetadataFilter(key=key, value=value, operator=op)


def group(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


@pytest.mark.parametrize(
    "op,value,expected",
    [
        (FilterOperator.EQ, "a", {"k": {"$eq": "a"}}),
        (FilterOperator.NE, 1, {"k": {"$ne": 1}}),
        (FilterOperator.GT, 1.5, {"k": {"$gt": 1.5}}),
        (FilterOperator.GTE, 2, {"k": {"$gte": 2}}),
        (FilterOperator.LT, "m", {"k": {"$lt": "m"}}),
        (FilterOperator.LTE, 3, {"k": {"$lte": 3}}),
        (FilterOperator.IN, ["a", "b"], {"k": {"$in": ["a", "b"]}}),
        (FilterOperator.NIN, [1, 2], {"k": {"$nin": [1, 2]}}),
        (FilterOperator.CONTAINS, "x", {"k": {"$eq": "x"}}),
        (FilterOperator.ANY, ["x", "y"], {"k": {"$in": ["x", "y"]}}),
        (FilterOperator.ALL, ["x", "y"], {"$and": [{"k": {"$eq": "x"}}, {"k": {"$eq": "y"}}]}),
        (FilterOperator.EQ, None, {"k": {"$eq": None}}),
    ],
)
def test_each_operator(op, value, expected) -> None:
    assert to_vicinity_filter(group(f("k", value, op))) == expected


def test_conditions_and_nesting() -> None:
    filters = group(
        f("year", 1900, FilterOperator.GT),
        group(f("a", "x"), f("a", "y"), condition=FilterCondition.OR),
    )
    assert to_vicinity_filter(filters) == {
        "$and": [
            {"year": {"$gt": 1900}},
            {"$or": [{"a": {"$eq": "x"}}, {"a": {"$eq": "y"}}]},
        ]
    }


def test_not_is_the_and_of_exact_negations() -> None:
    filters = group(
        f("a", "x"),
        f("b", ["p", "q"], FilterOperator.IN),
        f("tags", "t", FilterOperator.CONTAINS),
        f("tags", ["u", "v"], FilterOperator.ALL),
        condition=FilterCondition.NOT,
    )
    assert to_vicinity_filter(filters) == {
        "$and": [
            {"a": {"$ne": "x"}},
            {"b": {"$nin": ["p", "q"]}},
            {"tags": {"$ne": "t"}},
            {"$or": [{"tags": {"$ne": "u"}}, {"tags": {"$ne": "v"}}]},
        ]
    }


def test_not_of_a_group_applies_de_morgan() -> None:
    inner = group(f("a", 1), f("b", 2), condition=FilterCondition.AND)
    assert to_vicinity_filter(group(inner, condition=FilterCondition.NOT)) == {
        "$or": [{"a": {"$ne": 1}}, {"b": {"$ne": 2}}]
    }
    # A NOT inside a NOT cancels out.
    double = group(group(f("a", 1), condition=FilterCondition.NOT), condition=FilterCondition.NOT)
    assert to_vicinity_filter(double) == {"a": {"$eq": 1}}


def test_empty_filters_are_no_filter() -> None:
    assert to_vicinity_filter(None) is None
    assert to_vicinity_filter(group()) is None
    # An empty group matches everything: it drops out of an AND and decides an OR.
    assert to_vicinity_filter(group(f("a", 1), group())) == {"a": {"$eq": 1}}
    assert to_vicinity_filter(group(f("a", 1), group(), condition=FilterCondition.OR)) is None


@pytest.mark.parametrize(
    "filters,message",
    [
        (group(f("k", "x", FilterOperator.TEXT_MATCH)), "TEXT_MATCH is not supported"),
        (
            group(f("k", "x", FilterOperator.TEXT_MATCH_INSENSITIVE)),
            "TEXT_MATCH_INSENSITIVE is not supported",
        ),
        (group(f("k", None, FilterOperator.IS_EMPTY)), "IS_EMPTY is not supported"),
        (
            group(f("year", 1900, FilterOperator.GT), condition=FilterCondition.NOT),
            "GT cannot be negated",
        ),
        (group(f("k", "x", FilterOperator.ANY)), "needs a list value"),
        (group(f("k", [], FilterOperator.ALL)), "at least one value"),
        (group(group(), condition=FilterCondition.NOT), "matches nothing"),
    ],
)
def test_what_vicinity_cannot_say_is_refused(filters, message) -> None:
    with pytest.raises(UnsupportedFilterError, match=message):
        to_vicinity_filter(filters)
    # It is a ValueError, as LlamaIndex's own stores raise for unsupported filters.
    assert issubclass(UnsupportedFilterError, ValueError)


def test_long_id_lists_are_split() -> None:
    ids = [f"n{i}" for i in range(IN_LIST_CHUNK + 5)]
    clause = field_in("_node_id", ids)
    assert [len(c["_node_id"]["$in"]) for c in clause["$or"]] == [IN_LIST_CHUNK, 5]
    assert field_in("_node_id", ["a"]) == {"_node_id": {"$in": ["a"]}}


def test_all_of_leaves_out_missing_clauses() -> None:
    assert all_of([None, None]) is None
    assert all_of([None, {"a": 1}]) == {"a": 1}
    assert all_of([{"a": 1}, {"b": 2}]) == {"$and": [{"a": 1}, {"b": 2}]}
