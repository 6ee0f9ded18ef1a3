"""What depends on the meaning of texts, with the real model of env `VICINITY_TEST_MODEL`
(skipped, saying why, without it): retrieval finds the right passage, server-side MMR trades
redundancy for coverage, relevance scores order relevant above unrelated."""

from __future__ import annotations

import pytest
from vicinity_client.testing import LocalServer

from langchain_vicinity import VicinityVectorStore

CORPUS = {
    "lighthouse": "A lighthouse warns ships of rocks and dangerous coasts with a bright "
    "rotating lamp at night.",
    "bread": "Knead the dough, let it rise for an hour, then bake the bread in a hot oven.",
    "telescope": "Astronomers use large telescopes to observe distant galaxies and nebulae.",
    "volcano": "Lava erupts from a volcano when magma rises through cracks in the crust.",
    "tax": "Income tax returns must be filed before the deadline to avoid a penalty.",
}

# Paraphrases of one fact, and neighbouring facts that add something new.
REDUNDANT = {
    "cat-1": "Cats sleep for most of the day.",
    "cat-2": "A cat spends most of its day sleeping.",
    "cat-3": "Most of a cat's day is spent asleep.",
    "cat-4": "Cats are asleep for the greater part of each day.",
    "cat-food": "Cats need a diet rich in meat and protein.",
    "cat-hunt": "Cats hunt mice and birds, mostly at dawn and dusk.",
}


@pytest.fixture
def store(real_server: LocalServer, collection_name: str):
    s = VicinityVectorStore(collection_name, url=real_server.url)
    yield s
    s.delete_collection()
    s.close()


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_retriever_finds_the_answer(store: VicinityVectorStore, mode: str) -> None:
    store.add_texts(list(CORPUS.values()), ids=list(CORPUS))
    retriever = store.as_retriever(search_kwargs={"k": 1, "mode": mode})
    assert retriever.invoke("How do ships avoid running aground at night?")[0].id == "lighthouse"
    assert retriever.invoke("How do I make a loaf at home?")[0].id == "bread"
    assert retriever.invoke("What do observatories look at?")[0].id == "telescope"


async def test_async_retriever_finds_the_answer(store: VicinityVectorStore) -> None:
    await store.aadd_texts(list(CORPUS.values()), ids=list(CORPUS))
    docs = await store.as_retriever(search_kwargs={"k": 1}).ainvoke("molten rock eruption")
    assert docs[0].id == "volcano"


def test_server_mmr_covers_more_than_plain_search(store: VicinityVectorStore) -> None:
    store.add_texts(list(REDUNDANT.values()), ids=list(REDUNDANT))
    question = "How much do cats sleep?"
    plain = [d.id for d in store.similarity_search(question, k=3, mode="dense")]
    mmr = [
        d.id
        for d in store.max_marginal_relevance_search(
            question, k=3, fetch_k=6, lambda_mult=0.3, mode="dense"
        )
    ]
    assert all(i.startswith("cat-") and i[-1].isdigit() for i in plain)  # three paraphrases
    assert mmr != plain and mmr[0] == plain[0]
    assert {"cat-food", "cat-hunt"} & set(mmr)


def test_relevance_orders_relevant_above_unrelated(store: VicinityVectorStore) -> None:
    store.add_texts(list(CORPUS.values()), ids=list(CORPUS))
    pairs = store.similarity_search_with_relevance_scores("bright lamp guiding ships", k=5)
    assert pairs[0][0].id == "lighthouse"
    assert all(0.0 <= r <= 1.0 for _, r in pairs)
    assert pairs[0][1] > pairs[-1][1] + 0.1
    kept = store.similarity_search_with_relevance_scores(
        "bright lamp guiding ships", k=5, score_threshold=pairs[0][1] - 1e-6
    )
    assert [d.id for d, _ in kept] == ["lighthouse"]
