"""Rankings that depend on what texts mean, with the real model of env `VICINITY_TEST_MODEL`
(e.g. all-MiniLM-L6-v2); skipped, with the reason, when it is not set."""

import uuid
from typing import AsyncIterator, List, Tuple

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llama_index.vector_stores.vicinity import VicinityEmbedding, VicinityVectorStore

DOCUMENTS = [
    (
        "lighthouse",
        "A lighthouse is a tower with a bright lamp at the top. At night its rotating beam "
        "warns ships away from rocks and shallow water, and in fog a horn sounds so that "
        "sailors know where the dangerous coast lies.",
    ),
    (
        "bread",
        "To bake bread, mix flour, water, salt and yeast, knead the dough until it is smooth, "
        "let it rise for an hour, shape it into a loaf and bake it in a hot oven.",
    ),
    (
        "cats",
        "Cats sleep for most of the day, often curled up in a warm sunny spot on the sofa, "
        "and wake up in the evening to hunt and play.",
    ),
    (
        "volcano",
        "A volcano erupts when pressure from molten rock below the surface forces magma, ash "
        "and gas up through a vent in the crust.",
    ),
]


@pytest.fixture
async def setup(real_server) -> AsyncIterator[Tuple[VicinityVectorStore, VicinityEmbedding]]:
    """A store on a fresh collection of the real server, and the server's embeddings.

    Async, so that clients the async tests open are closed on their loop."""
    store = VicinityVectorStore(collection_name=f"sem_{uuid.uuid4().hex[:12]}", url=real_server.url)
    embed = VicinityEmbedding(url=real_server.url)
    yield store, embed
    if store.client.collection_exists(store.collection_name):
        store.client.delete_collection(store.collection_name)
    await store.aclose()
    await embed.aclose()


def index_of(store: VicinityVectorStore, embed: VicinityEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(id_=name, text=text, metadata={"name": name}) for name, text in DOCUMENTS],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        # Nodes well within the 256 tokens the model reads (LlamaIndex counts its own tokens).
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=16)],
    )


QUESTIONS = [
    ("How do sailors avoid rocks at night?", "lighthouse"),
    ("What do I need to make a loaf?", "bread"),
    ("Where do pets nap during the afternoon?", "cats"),
    ("Why does magma come out of a mountain?", "volcano"),
]


@pytest.mark.parametrize("question,expected", QUESTIONS)
def test_dense_retrieval_finds_the_answer(setup, question: str, expected: str) -> None:
    store, embed = setup
    found = index_of(store, embed).as_retriever(similarity_top_k=1).retrieve(question)
    assert [n.node.ref_doc_id for n in found] == [expected]


def test_hybrid_and_text_search(setup) -> None:
    store, embed = setup
    index = index_of(store, embed)
    hybrid = index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5, similarity_top_k=1)
    assert hybrid.retrieve("foghorn beam warns ships")[0].node.ref_doc_id == "lighthouse"
    lexical = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=4)
    assert [n.node.ref_doc_id for n in lexical.retrieve("yeast dough")] == ["bread"]


async def test_async_retrieval(setup) -> None:
    store, embed = setup
    index = VectorStoreIndex(
        nodes=[], storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    for name, text in DOCUMENTS:
        await index.ainsert(Document(id_=name, text=text))
    found = await index.as_retriever(similarity_top_k=1).aretrieve("eruption of molten rock")
    assert found[0].node.ref_doc_id == "volcano"


def test_server_side_and_client_side_embeddings_agree(setup) -> None:
    # Nodes sent without embeddings are embedded by the server; a query embedded by
    # VicinityEmbedding lands in the same space, and so does a query the server embeds.
    store, embed = setup
    store.add([TextNode(id_=name, text=text) for name, text in DOCUMENTS])
    question = "How do sailors avoid rocks at night?"
    by_vector = store.query(
        VectorStoreQuery(query_embedding=embed.get_query_embedding(question), similarity_top_k=4)
    )
    by_text = store.query(VectorStoreQuery(query_str=question, similarity_top_k=4))
    assert by_vector.ids[0] == by_text.ids[0] == "lighthouse"
    assert by_vector.ids == by_text.ids
    assert by_vector.similarities == pytest.approx(by_text.similarities, abs=1e-4)


def test_mmr_prefers_a_different_answer_to_a_near_duplicate(setup) -> None:
    store, embed = setup
    texts: List[Tuple[str, str]] = [
        ("beam-1", "The lighthouse beam warns ships away from the rocks."),
        ("beam-2", "The lighthouse's beam warns the ships away from rocks."),
        ("horn", "In thick fog, a horn tells sailors that the coast is near."),
    ]
    store.add(
        [TextNode(id_=i, text=t, embedding=embed.get_text_embedding(t)) for i, t in texts]
    )
    query = embed.get_query_embedding("How does the lighthouse beam warn ships?")
    plain = store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=2))
    assert set(plain.ids) == {"beam-1", "beam-2"}
    diverse = store.query(
        VectorStoreQuery(
            query_embedding=query,
            similarity_top_k=2,
            mode=VectorStoreQueryMode.MMR,
            mmr_threshold=0.3,
        )
    )
    assert "horn" in diverse.ids
