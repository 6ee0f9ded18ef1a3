"""`VicinityVectorStore` against a live server with the tiny model (dimension 32).

Modelled on LlamaIndex's own vector store tests (the in-memory `SimpleVectorStore` and the
integrations' suites): nodes with hand-made embeddings, so that what a query returns does not
depend on what the texts mean. Where LlamaIndex defines what a filter selects, the answer is
checked against `SimpleVectorStore` on the same nodes.
"""

import math
from typing import List, Optional, Set

import pytest
from llama_index.core.schema import (
    IndexNode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from vicinity_client import (
    APIConnectionError,
    BadRequestError,
    NotFoundError,
    Vicinity,
)

from llama_index.vector_stores.vicinity import UnsupportedFilterError, VicinityVectorStore
from llama_index.vector_stores.vicinity.base import NODE_ID_KEY

from conftest import TINY_DIMENSION

DIM = TINY_DIMENSION


def vec(*weights: float, dim: int = DIM) -> List[float]:
    """A unit vector with these leading coordinates."""
    v = list(weights) + [0.0] * (dim - len(weights))
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def unit(i: int, dim: int = DIM) -> List[float]:
    v = [0.0] * dim
    v[i] = 1.0
    return v


def library() -> List[TextNode]:
    """Five nodes of three source documents, with metadata for every filter operator."""
    rows = [
        ("n1", "d1", {"author": "Stephen King", "year": 1986, "rating": 4.5, "tags": ["horror", "classic"]}),
        ("n2", "d1", {"author": "Marie Curie", "year": 1911, "rating": 5.0, "tags": ["science"]}),
        ("n3", "d2", {"author": "Albert Einstein", "year": 1921, "rating": 4.8, "tags": ["science", "physics"]}),
        ("n4", "d3", {"author": "Charlotte Bronte", "year": 1847, "rating": 4.2, "tags": ["classic"]}),
        # No author: a missing field, which `!=` and `nin` match and ordering never does.
        ("n5", "d3", {"year": 2001, "rating": 3.9, "tags": []}),
    ]
    return [
        TextNode(
            id_=node_id,
            text=f"text of {node_id}",
            metadata=metadata,
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=ref)},
            embedding=unit(i),
        )
        for i, (node_id, ref, metadata) in enumerate(rows)
    ]


def ids(result) -> List[str]:
    return [n.node_id for n in result.nodes]


def everything(filters: Optional[MetadataFilters] = None, **kwargs) -> VectorStoreQuery:
    """A query whose answer is every node that passes the filters."""
    return VectorStoreQuery(
        query_embedding=vec(*([1.0] * 8)), similarity_top_k=10, filters=filters, **kwargs
    )


def mf(key, value, op=FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


# ------------------------------------------------------------------------ add and query


@pytest.mark.parametrize("use_async", [False, True])
async def test_add_and_query(store: VicinityVectorStore, use_async: bool) -> None:
    nodes = library()
    if use_async:
        added = await store.async_add(nodes)
        result = await store.aquery(VectorStoreQuery(query_embedding=unit(2), similarity_top_k=2))
    else:
        added = store.add(nodes)
        result = store.query(VectorStoreQuery(query_embedding=unit(2), similarity_top_k=2))
    assert added == [n.node_id for n in nodes]
    assert result.ids == ["n3", result.ids[1]] and len(result.ids) == 2
    top = result.nodes[0]
    assert top.node_id == "n3"
    assert top.get_content() == "text of n3"
    assert top.metadata["author"] == "Albert Einstein"
    assert top.ref_doc_id == "d2"
    assert result.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert result.similarities[1] == pytest.approx(0.0, abs=1e-5)


def test_first_add_creates_a_text_collection(store: VicinityVectorStore) -> None:
    store.add(library())
    collection = store.client.get_collection(store.collection_name)
    # The tiny model's dimension: a text collection, which has a lexical index.
    assert collection.source == "text"
    assert collection.dimension == DIM
    assert collection.documents == 5


def test_other_dimensions_make_a_vector_collection(store: VicinityVectorStore) -> None:
    store.add([TextNode(id_="v1", text="three", embedding=[1.0, 0.0, 0.0])])
    collection = store.client.get_collection(store.collection_name)
    assert collection.source == "vector"
    assert collection.dimension == 3
    result = store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=1))
    assert ids(result) == ["v1"]
    # Text searches need the lexical index of a text collection: the server says so.
    with pytest.raises(BadRequestError) as err:
        store.query(
            VectorStoreQuery(query_str="three", mode=VectorStoreQueryMode.TEXT_SEARCH)
        )
    assert err.value.code == "lexical_unavailable"


def test_collection_settings_apply_when_the_store_creates_it(
    tiny_server, collection_name: str
) -> None:
    store = VicinityVectorStore(
        collection_name=collection_name, url=tiny_server.url, distance="dot"
    )
    try:
        store.add(library())
        assert store.client.get_collection(collection_name).distance == "dot"
    finally:
        store.client.delete_collection(collection_name)
        store.close()


def test_existing_collection_is_used_as_it_is(store: VicinityVectorStore) -> None:
    store.client.create_collection(store.collection_name, dimension=DIM, distance="l2")
    store.add(library())
    collection = store.client.get_collection(store.collection_name)
    assert collection.distance == "l2"
    assert collection.documents == 5


def test_add_replaces_a_node_of_the_same_id(store: VicinityVectorStore) -> None:
    store.add(library())
    store.add([TextNode(id_="n1", text="rewritten", embedding=unit(9))])
    result = store.query(VectorStoreQuery(query_embedding=unit(9), similarity_top_k=1))
    assert ids(result) == ["n1"]
    assert result.nodes[0].get_content() == "rewritten"
    assert store.client.get_collection(store.collection_name).documents == 5


def test_add_nothing_sends_nothing(store: VicinityVectorStore, spy) -> None:
    assert store.add([]) == []
    assert spy.seen == []


def test_add_is_batched(store: VicinityVectorStore, spy) -> None:
    store.batch_size = 2
    store.add(library())
    assert [len(b["documents"]) for b in spy.bodies("/documents")] == [2, 2, 1]


def test_what_add_sends(store: VicinityVectorStore, spy) -> None:
    store.add(library()[:1])
    (body,) = spy.bodies("/documents")
    (doc,) = body["documents"]
    assert doc["id"] == "n1"
    assert doc["text"] == "text of n1"
    assert len(doc["vector"]) == DIM
    metadata = doc["metadata"]
    # The node's own metadata, filterable at the top level...
    assert metadata["author"] == "Stephen King"
    assert metadata["ref_doc_id"] == "d1"
    assert metadata[NODE_ID_KEY] == "n1"
    # ...and the node itself, without its text (sent once, as the document's text).
    assert '"text": ""' in metadata["_node_content"]
    assert metadata["_node_type"] == "TextNode"


# ------------------------------------------------------------------------- round trips


def rich_node() -> TextNode:
    return TextNode(
        id_="rt-1",
        text="Lighthouses guide ships past dangerous coasts.\nSecond line: ü, 字.",
        metadata={
            "title": "Lighthouses",
            "nested": {"a": 1, "b": [1, 2, {"c": None}]},
            "tags": ["sea", "light"],
            "score": 0.25,
            "flag": True,
            "empty": None,
        },
        excluded_embed_metadata_keys=["tags"],
        excluded_llm_metadata_keys=["score"],
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc-1", metadata={"file": "a.txt"}),
            NodeRelationship.PREVIOUS: RelatedNodeInfo(node_id="rt-0"),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="rt-2"),
        },
        start_char_idx=10,
        end_char_idx=80,
        metadata_template="{key}=>{value}",
        text_template="{metadata_str}\n---\n{content}",
        embedding=unit(0),
    )


def assert_same_node(restored, original) -> None:
    assert type(restored) is type(original)
    assert restored.model_dump(exclude={"embedding"}) == original.model_dump(exclude={"embedding"})
    assert restored.hash == original.hash


@pytest.mark.parametrize("use_async", [False, True])
async def test_node_round_trip(store: VicinityVectorStore, use_async: bool) -> None:
    node = rich_node()
    index_node = IndexNode(id_="idx-1", text="an index node", index_id="sub-index", embedding=unit(1))
    if use_async:
        await store.async_add([node, index_node])
        by_query = await store.aquery(VectorStoreQuery(query_embedding=unit(0), similarity_top_k=2))
        by_id = await store.aget_nodes(node_ids=["idx-1", "rt-1"])
    else:
        store.add([node, index_node])
        by_query = store.query(VectorStoreQuery(query_embedding=unit(0), similarity_top_k=2))
        by_id = store.get_nodes(node_ids=["idx-1", "rt-1"])
    assert_same_node(by_query.nodes[0], node)
    assert_same_node(by_query.nodes[1], index_node)
    assert_same_node(by_id[0], index_node)
    assert_same_node(by_id[1], node)
    assert by_id[1].ref_doc_id == "doc-1"
    assert by_id[1].relationships[NodeRelationship.NEXT].node_id == "rt-2"


def test_dotted_keys_filter_nested_metadata(store: VicinityVectorStore) -> None:
    store.add([rich_node(), *library()])
    nested = MetadataFilters(filters=[mf("nested.a", 1)])
    assert ids(store.query(everything(nested))) == ["rt-1"]
    assert ids(store.query(everything(MetadataFilters(filters=[mf("nested.a", 2)])))) == []


def test_documents_written_by_other_clients_read_as_text_nodes(
    store: VicinityVectorStore,
) -> None:
    store.add(library()[:1])
    store.client.upsert(
        store.collection_name,
        [{"id": "raw", "text": "written elsewhere", "vector": unit(7), "metadata": {"k": "v"}}],
    )
    result = store.query(VectorStoreQuery(query_embedding=unit(7), similarity_top_k=1))
    node = result.nodes[0]
    assert isinstance(node, TextNode)
    assert (node.node_id, node.get_content(), node.metadata) == ("raw", "written elsewhere", {"k": "v"})


# ----------------------------------------------------------------------------- filters


FLAT_CASES = [
    ("eq", [mf("author", "Marie Curie")]),
    ("ne", [mf("author", "Marie Curie", FilterOperator.NE)]),
    ("gt", [mf("year", 1921, FilterOperator.GT)]),
    ("gte", [mf("year", 1921, FilterOperator.GTE)]),
    ("lt", [mf("year", 1911, FilterOperator.LT)]),
    ("lte", [mf("year", 1911, FilterOperator.LTE)]),
    ("gt-float", [mf("rating", 4.6, FilterOperator.GT)]),
    ("lt-string", [mf("author", "D", FilterOperator.LT)]),
    ("in", [mf("author", ["Marie Curie", "Albert Einstein"], FilterOperator.IN)]),
    ("nin", [mf("author", ["Marie Curie", "Albert Einstein"], FilterOperator.NIN)]),
    ("in-numbers", [mf("year", [1847, 2001], FilterOperator.IN)]),
    ("contains", [mf("tags", "science", FilterOperator.CONTAINS)]),
    ("any", [mf("tags", ["physics", "horror"], FilterOperator.ANY)]),
    ("all", [mf("tags", ["science", "physics"], FilterOperator.ALL)]),
    ("ref_doc_id", [mf("ref_doc_id", "d3")]),
    ("and", [mf("year", 1900, FilterOperator.GT), mf("tags", "science", FilterOperator.CONTAINS)]),
]


def simple_store_answer(filters: MetadataFilters) -> Set[str]:
    """What LlamaIndex's in-memory store selects with the same filters."""
    simple = SimpleVectorStore()
    simple.add(library())
    return set(simple.query(everything(filters)).ids)


@pytest.mark.parametrize("name,filters", FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_filter_operators_select_what_llamaindex_selects(
    store: VicinityVectorStore, name: str, filters: List[MetadataFilter]
) -> None:
    store.add(library())
    condition_filters = MetadataFilters(filters=filters)
    expected = simple_store_answer(condition_filters)
    assert expected, "a case that selects nothing proves little"
    assert set(ids(store.query(everything(condition_filters)))) == expected
    assert {n.node_id for n in store.get_nodes(filters=condition_filters)} == expected


def test_or_condition(store: VicinityVectorStore) -> None:
    store.add(library())
    filters = MetadataFilters(
        filters=[mf("author", "Charlotte Bronte"), mf("year", 2000, FilterOperator.GT)],
        condition=FilterCondition.OR,
    )
    assert set(ids(store.query(everything(filters)))) == {"n4", "n5"}
    assert simple_store_answer(filters) == {"n4", "n5"}


def test_nested_conditions(store: VicinityVectorStore) -> None:
    store.add(library())
    filters = MetadataFilters(
        filters=[
            MetadataFilters(
                filters=[mf("author", "Stephen King"), mf("author", "Marie Curie")],
                condition=FilterCondition.OR,
            ),
            mf("year", 1950, FilterOperator.LT),
        ],
        condition=FilterCondition.AND,
    )
    assert ids(store.query(everything(filters))) == ["n2"]
    deeper = MetadataFilters(
        filters=[
            filters,
            MetadataFilters(
                filters=[mf("tags", "physics", FilterOperator.CONTAINS), mf("year", 1847)],
                condition=FilterCondition.OR,
            ),
        ],
        condition=FilterCondition.OR,
    )
    assert set(ids(store.query(everything(deeper)))) == {"n2", "n3", "n4"}


def test_not_condition(store: VicinityVectorStore) -> None:
    store.add(library())
    filters = MetadataFilters(
        filters=[mf("author", "Stephen King"), mf("tags", ["classic"], FilterOperator.ANY)],
        condition=FilterCondition.NOT,
    )
    assert set(ids(store.query(everything(filters)))) == {"n2", "n3", "n5"}
    assert simple_store_answer(filters) == {"n2", "n3", "n5"}


def test_unsupported_filters_raise_before_any_request(store: VicinityVectorStore, spy) -> None:
    filters = MetadataFilters(filters=[mf("author", "King", FilterOperator.TEXT_MATCH)])
    with pytest.raises(UnsupportedFilterError, match="TEXT_MATCH"):
        store.query(everything(filters))
    with pytest.raises(UnsupportedFilterError):
        store.get_nodes(filters=filters)
    with pytest.raises(UnsupportedFilterError):
        store.delete_nodes(filters=filters)
    assert spy.seen == []


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_filter_the_server_refuses_raises_its_error(
    store: VicinityVectorStore, use_async: bool
) -> None:
    store.add(library())
    # `in` takes a list; the server names the problem (code bad_filter).
    filters = MetadataFilters(filters=[mf("author", "Marie Curie", FilterOperator.IN)])
    with pytest.raises(BadRequestError) as err:
        if use_async:
            await store.aquery(everything(filters))
        else:
            store.query(everything(filters))
    assert err.value.status == 400
    assert err.value.code == "bad_filter"
    assert "$in" in err.value.message


# ------------------------------------------------------------- doc_ids and node_ids


def test_doc_ids_restrict_the_query(store: VicinityVectorStore) -> None:
    store.add(library())
    assert set(ids(store.query(everything(doc_ids=["d1", "d2"])))) == {"n1", "n2", "n3"}


def test_node_ids_restrict_the_query(store: VicinityVectorStore) -> None:
    store.add(library())
    assert set(ids(store.query(everything(node_ids=["n2", "n5", "missing"])))) == {"n2", "n5"}
    filters = MetadataFilters(filters=[mf("year", 1950, FilterOperator.GT)])
    combined = everything(filters, node_ids=["n1", "n2", "n5"], doc_ids=["d1"])
    assert ids(store.query(combined)) == ["n1"]


def test_empty_id_lists_do_not_restrict(store: VicinityVectorStore) -> None:
    # `VectorStoreIndex.as_retriever` passes `node_ids=[]` for a store that keeps text.
    store.add(library())
    assert len(store.query(everything(node_ids=[], doc_ids=[])).nodes) == 5


def test_query_without_embedding_or_text_reads_by_filter(store: VicinityVectorStore) -> None:
    store.add(library())
    filters = MetadataFilters(filters=[mf("tags", "science", FilterOperator.CONTAINS)])
    result = store.query(VectorStoreQuery(filters=filters, similarity_top_k=10))
    assert ids(result) == ["n2", "n3"]
    assert result.ids == ["n2", "n3"]
    assert result.similarities is None
    assert len(store.query(VectorStoreQuery(similarity_top_k=2)).nodes) == 2


# ----------------------------------------------------- get_nodes, delete_nodes, clear


@pytest.mark.parametrize("use_async", [False, True])
async def test_get_nodes(store: VicinityVectorStore, use_async: bool) -> None:
    store.add(library())

    async def call(**kwargs):
        return await store.aget_nodes(**kwargs) if use_async else store.get_nodes(**kwargs)

    # In the order asked for, missing ids left out.
    assert [n.node_id for n in await call(node_ids=["n4", "missing", "n1"])] == ["n4", "n1"]
    assert [n.get_content() for n in await call(node_ids=["n2"])] == ["text of n2"]
    science = MetadataFilters(filters=[mf("tags", "science", FilterOperator.CONTAINS)])
    assert [n.node_id for n in await call(filters=science)] == ["n2", "n3"]
    both = await call(node_ids=["n3", "n1", "n2"], filters=science)
    assert [n.node_id for n in both] == ["n3", "n2"]
    assert sorted(n.node_id for n in await call()) == ["n1", "n2", "n3", "n4", "n5"]
    assert await call(node_ids=[]) == []


def test_get_nodes_pages_through_large_collections(store: VicinityVectorStore) -> None:
    nodes = [
        TextNode(id_=f"p{i:04d}", text=f"node {i}", embedding=vec(1.0, i / 1000.0), metadata={"i": i})
        for i in range(1203)
    ]
    store.add(nodes)
    got = store.get_nodes()
    assert [n.node_id for n in got] == [n.node_id for n in nodes]
    many_ids = [n.node_id for n in reversed(nodes)]
    assert [n.node_id for n in store.get_nodes(node_ids=many_ids)] == many_ids
    later = MetadataFilters(filters=[mf("i", 600, FilterOperator.GTE)])
    assert len(store.get_nodes(node_ids=many_ids, filters=later)) == 603


@pytest.mark.parametrize("use_async", [False, True])
async def test_delete_by_ref_doc_id(store: VicinityVectorStore, use_async: bool) -> None:
    store.add(library())
    if use_async:
        await store.adelete("d1")
    else:
        store.delete("d1")
    assert sorted(n.node_id for n in store.get_nodes()) == ["n3", "n4", "n5"]
    assert set(ids(store.query(everything()))) == {"n3", "n4", "n5"}


@pytest.mark.parametrize("use_async", [False, True])
async def test_delete_nodes(store: VicinityVectorStore, use_async: bool) -> None:
    store.add(library())

    async def delete(**kwargs):
        if use_async:
            await store.adelete_nodes(**kwargs)
        else:
            store.delete_nodes(**kwargs)

    def left() -> List[str]:
        return sorted(n.node_id for n in store.get_nodes())

    await delete(node_ids=["n1", "missing"])
    assert left() == ["n2", "n3", "n4", "n5"]
    old = MetadataFilters(filters=[mf("year", 1920, FilterOperator.LT)])
    # Both: only the listed nodes that match.
    await delete(node_ids=["n2", "n3"], filters=old)
    assert left() == ["n3", "n4", "n5"]
    await delete(filters=old)
    assert left() == ["n3", "n5"]
    await delete(node_ids=[])
    assert left() == ["n3", "n5"]
    with pytest.raises(ValueError, match="clear"):
        await delete()


@pytest.mark.parametrize("use_async", [False, True])
async def test_clear(store: VicinityVectorStore, use_async: bool) -> None:
    store.add(library())
    if use_async:
        await store.aclear()
    else:
        store.clear()
    assert store.get_nodes() == []
    # The collection stays, with its settings.
    assert store.client.get_collection(store.collection_name).dimension == DIM


# ------------------------------------------------------------------------------ modes


def mmr_nodes() -> List[TextNode]:
    return [
        TextNode(id_="A", text="a", embedding=vec(1.0)),
        # A near-duplicate of A.
        TextNode(id_="B", text="b", embedding=vec(1.0, 0.05)),
        # Less relevant, but different.
        TextNode(id_="C", text="c", embedding=vec(0.7, 0.0, 0.7)),
    ]


@pytest.mark.parametrize("use_async", [False, True])
async def test_mmr(store: VicinityVectorStore, spy, aspy, use_async: bool) -> None:
    store.add(mmr_nodes())

    async def run(threshold, **kwargs):
        query = VectorStoreQuery(
            query_embedding=vec(1.0),
            similarity_top_k=2,
            mode=VectorStoreQueryMode.MMR,
            mmr_threshold=threshold,
        )
        if use_async:
            return await store.aquery(query, **kwargs)
        return store.query(query, **kwargs)

    assert ids(await run(1.0)) == ["A", "B"]
    diverse = await run(0.3)
    assert ids(diverse) == ["A", "C"]
    # Scores stay the query's similarities.
    assert diverse.similarities[1] == pytest.approx(math.sqrt(0.5), abs=1e-4)
    # The retriever's way of passing the threshold, and the candidates to choose from.
    assert ids(await run(None, mmr_threshold=0.3, mmr_prefetch_k=3)) == ["A", "C"]
    assert ids(await run(None, mmr_threshold=0.3, mmr_prefetch_factor=1.0)) == ["A", "B"]
    sent = (aspy if use_async else spy).bodies("/query")
    assert [b["mmr"] for b in sent] == [
        {"lambda": 1.0},
        {"lambda": 0.3},
        {"lambda": 0.3, "fetch_k": 3},
        {"lambda": 0.3, "fetch_k": 2},
    ]
    assert all("group_by" not in b for b in sent)


def test_mmr_default_lambda(store: VicinityVectorStore, spy) -> None:
    store.add(mmr_nodes())
    store.query(VectorStoreQuery(query_embedding=vec(1.0), mode=VectorStoreQueryMode.MMR))
    assert spy.bodies("/query")[-1]["mmr"] == {"lambda": 0.5}


def lexical_nodes() -> List[TextNode]:
    return [
        TextNode(id_="sea", text="The lighthouse keeper watched the ships.", embedding=unit(0)),
        TextNode(id_="cat", text="Cats sleep on warm sofas all afternoon.", embedding=unit(1)),
        TextNode(id_="bread", text="Bakers knead bread before dawn.", embedding=unit(2)),
    ]


@pytest.mark.parametrize("use_async", [False, True])
async def test_text_search(store: VicinityVectorStore, spy, aspy, use_async: bool) -> None:
    store.add(lexical_nodes())
    for mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
        query = VectorStoreQuery(query_str="lighthouse ships", mode=mode, similarity_top_k=3)
        result = await store.aquery(query) if use_async else store.query(query)
        # BM25: only the node with those words matches.
        assert ids(result) == ["sea"]
        assert result.similarities[0] > 0
    sent = (aspy if use_async else spy).bodies("/query")
    assert [b["mode"] for b in sent] == ["lexical", "lexical"]
    assert "vector" not in sent[0]


@pytest.mark.parametrize("use_async", [False, True])
async def test_hybrid(store: VicinityVectorStore, spy, aspy, use_async: bool) -> None:
    store.add(lexical_nodes())
    query = VectorStoreQuery(
        query_str="cats sofas",
        query_embedding=unit(2),  # ignored: the server embeds query_str for the dense leg
        mode=VectorStoreQueryMode.HYBRID,
        alpha=0.0,
        similarity_top_k=3,
        hybrid_top_k=2,
        sparse_top_k=7,
    )
    result = await store.aquery(query) if use_async else store.query(query)
    # alpha 0 weighs the lexical leg only.
    assert ids(result)[0] == "cat"
    assert len(result.nodes) == 2
    (body,) = (aspy if use_async else spy).bodies("/query")
    assert body["mode"] == "hybrid"
    assert body["query"] == "cats sofas"
    assert body["alpha"] == 0.0
    assert body["k"] == 2
    assert body["candidates"] == 7
    assert "vector" not in body


def test_hybrid_and_text_search_need_query_str(store: VicinityVectorStore) -> None:
    for mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.TEXT_SEARCH):
        with pytest.raises(ValueError, match="needs query_str"):
            store.query(VectorStoreQuery(query_embedding=unit(0), mode=mode))


def test_unsupported_mode_raises(store: VicinityVectorStore) -> None:
    with pytest.raises(ValueError, match="not supported"):
        store.query(VectorStoreQuery(query_embedding=unit(0), mode=VectorStoreQueryMode.SVM))


def test_unknown_query_kwargs_raise(store: VicinityVectorStore) -> None:
    with pytest.raises(TypeError, match="mmr_treshold"):
        store.query(VectorStoreQuery(query_embedding=unit(0)), mmr_treshold=0.2)


def test_search_params_pass_through(store: VicinityVectorStore, spy) -> None:
    store.add(library())
    store.query(everything(), params={"exact": True})
    assert spy.bodies("/query")[-1]["params"] == {"exact": True}


# ------------------------------------------------------------ nodes the server embeds


LONG_TEXT = " ".join(
    f"Sentence number {i} talks about lighthouses, harbours and the ships that pass them."
    for i in range(12)
)


@pytest.mark.parametrize("use_async", [False, True])
async def test_nodes_without_embeddings_are_embedded_by_the_server(
    store: VicinityVectorStore, use_async: bool
) -> None:
    nodes = [
        TextNode(id_="long", text=LONG_TEXT, metadata={"kind": "long"}),
        TextNode(id_="short", text="A short note about bread.", metadata={"kind": "short"}),
    ]
    if use_async:
        await store.async_add(nodes)
    else:
        store.add(nodes)
    collection = store.client.get_collection(store.collection_name)
    assert collection.source == "text"
    # The tiny model reads 32 tokens: the long node is split into passages...
    assert collection.passages > 2
    # ...and still comes back once per query, as the node it was.
    query = VectorStoreQuery(query_str="lighthouses and ships", similarity_top_k=2)
    result = await store.aquery(query) if use_async else store.query(query)
    assert sorted(result.ids) == ["long", "short"]
    lexical = store.query(
        VectorStoreQuery(query_str="lighthouses", mode=VectorStoreQueryMode.TEXT_SEARCH, similarity_top_k=5)
    )
    assert lexical.ids == ["long"]
    # A hit carries the passage that matched; get_nodes gives the whole node.
    assert lexical.nodes[0].get_content() in LONG_TEXT
    (whole,) = store.get_nodes(node_ids=["long"])
    assert whole.get_content() == LONG_TEXT
    assert whole.metadata == {"kind": "long"}


def test_a_node_with_neither_text_nor_embedding_is_refused(store: VicinityVectorStore) -> None:
    with pytest.raises(ValueError, match="neither an embedding nor text"):
        store.add([TextNode(id_="empty", text="  ")])


# ---------------------------------------------------------------------------- errors


def test_errors_of_the_server_propagate(store: VicinityVectorStore) -> None:
    # Nothing was added: the collection does not exist.
    with pytest.raises(NotFoundError) as err:
        store.query(everything())
    assert err.value.code == "collection_not_found"
    with pytest.raises(NotFoundError):
        store.get_nodes()
    with pytest.raises(NotFoundError):
        store.delete("d1")
    with pytest.raises(NotFoundError):
        store.clear()
    store.add(library())
    with pytest.raises(BadRequestError) as err:
        store.add([TextNode(id_="short", text="wrong width", embedding=[1.0, 0.0])])
    assert err.value.code == "dimension_mismatch"


async def test_errors_propagate_from_the_async_client(store: VicinityVectorStore) -> None:
    with pytest.raises(NotFoundError):
        await store.aquery(everything())
    with pytest.raises(NotFoundError):
        await store.aget_nodes()


def test_connection_errors_propagate(tiny_server) -> None:
    # A port nothing listens on: bind one, then close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = VicinityVectorStore(
        collection_name="x", url=f"http://127.0.0.1:{port}", client_kwargs={"max_retries": 0}
    )
    with pytest.raises(APIConnectionError):
        store.add(library())
    store.close()


def test_an_async_client_cannot_be_guessed_from_a_sync_one(tiny_server) -> None:
    with Vicinity(url=tiny_server.url) as client:
        store = VicinityVectorStore(collection_name="x", client=client)
        assert store.client is client
        with pytest.raises(ValueError, match="aclient"):
            store.aclient


def test_serializes_without_secrets(tiny_server) -> None:
    store = VicinityVectorStore(collection_name="x", url=tiny_server.url, api_key="secret")
    dumped = store.to_dict()
    assert dumped["collection_name"] == "x"
    assert dumped["class_name"] == "VicinityVectorStore"
    assert "secret" not in str(dumped)
    store.close()

