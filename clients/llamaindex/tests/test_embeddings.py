"""`VicinityEmbedding` against a live server with the tiny model (dimension 32)."""

import math
import uuid
from typing import AsyncIterator

import pytest
from vicinity_client import AsyncVicinity, BadRequestError, Vicinity

from llama_index.vector_stores.vicinity import VicinityEmbedding

from conftest import TINY_DIMENSION, AsyncSpyTransport, SpyTransport

# Short enough for the 32 tokens the tiny model reads.
TEXTS = [
    "Lighthouses guide ships.",
    "Cats sleep on sofas.",
    "Bakers knead bread.",
    "The harbour logs ships.",
    "Rain fell on the town.",
]
# Longer than that.
LONG = "word " * 100


@pytest.fixture
def spy() -> SpyTransport:
    return SpyTransport()


@pytest.fixture
def aspy() -> AsyncSpyTransport:
    return AsyncSpyTransport()


@pytest.fixture
async def embed(tiny_server, spy, aspy) -> AsyncIterator[VicinityEmbedding]:
    """A model, in batches of 2, whose clients record their requests."""
    model = VicinityEmbedding(
        client=Vicinity(url=tiny_server.url, transport=spy),
        aclient=AsyncVicinity(url=tiny_server.url, transport=aspy),
        embed_batch_size=2,
    )
    yield model
    model.client.close()
    await model.aclient.aclose()


def close(a, b) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b))


def test_text_and_query_embeddings(embed: VicinityEmbedding, spy, tiny_server) -> None:
    vectors = embed.get_text_embedding_batch(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(len(v) == TINY_DIMENSION for v in vectors)
    # Batches of embed_batch_size, in order.
    assert [len(b["input"]) for b in spy.bodies("/v1/embeddings")] == [2, 2, 1]
    assert close(embed.get_query_embedding(TEXTS[0]), vectors[0])
    assert close(embed.get_text_embedding(TEXTS[1]), vectors[1])


async def test_async_embeddings(embed: VicinityEmbedding, spy, aspy) -> None:
    vectors = await embed.aget_text_embedding_batch(TEXTS)
    assert [len(b["input"]) for b in aspy.bodies("/v1/embeddings")] == [2, 2, 1]
    assert spy.seen == []
    assert close(await embed.aget_query_embedding(TEXTS[2]), vectors[2])
    assert close(await embed.aget_text_embedding(TEXTS[3]), vectors[3])
    assert close(embed.get_text_embedding(TEXTS[4]), vectors[4])


def test_vectors_agree_with_what_the_server_embeds(embed: VicinityEmbedding, tiny_server) -> None:
    # The server embeds a text collection's passages (and a hybrid query's dense leg) with the
    # same model: vectors from VicinityEmbedding sit in the same space.
    name = f"emb_{uuid.uuid4().hex[:12]}"
    with tiny_server.client() as client:
        client.create_collection(name)
        try:
            client.upsert(name, [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
            for i, text in enumerate(TEXTS):
                (hit,) = client.query(
                    name, text, mode="dense", k=1, include=["vector"], filter=None
                ).results
                assert hit.document_id == str(i)
                assert close(hit.vector, embed.get_text_embedding(text))
        finally:
            client.delete_collection(name)


def test_too_long_input_raises_the_servers_error(embed: VicinityEmbedding) -> None:
    with pytest.raises(BadRequestError) as err:
        embed.get_text_embedding(LONG)
    assert err.value.code == "input_too_long"


async def test_truncate_asks_the_server_to_cut(tiny_server) -> None:
    model = VicinityEmbedding(url=tiny_server.url, truncate=True)
    try:
        (vector,) = model.get_text_embedding_batch([LONG])
        assert len(vector) == TINY_DIMENSION
        avector = await model.aget_query_embedding(LONG)
        assert close(vector, avector)
    finally:
        await model.aclose()


def test_serializes_without_secrets(tiny_server) -> None:
    model = VicinityEmbedding(url=tiny_server.url, api_key="secret")
    dumped = model.to_dict()
    assert dumped["class_name"] == "VicinityEmbedding"
    assert dumped["url"] == tiny_server.url
    assert "secret" not in str(dumped)
    model.close()
