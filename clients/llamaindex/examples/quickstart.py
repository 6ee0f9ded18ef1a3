"""Index a few documents in vicinity with LlamaIndex and retrieve from them in every mode.

Run a server first (`vicinity serve`, all-MiniLM-L6-v2 by default), then:

    VICINITY_URL=http://127.0.0.1:8080 python examples/quickstart.py

Everything is embedded by the server: nothing else is contacted, and no LLM is used.
"""

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from llama_index.vector_stores.vicinity import VicinityEmbedding, VicinityVectorStore

COLLECTION = "llamaindex_quickstart"

DOCUMENTS = [
    Document(
        id_="lighthouses",
        text="A lighthouse is a tower with a bright lamp at the top. At night its rotating "
        "beam warns ships away from rocks and shallow water, and in fog a horn sounds so "
        "that sailors know where the dangerous coast lies.",
        metadata={"topic": "sea", "year": 2019},
    ),
    Document(
        id_="bread",
        text="To bake bread, mix flour, water, salt and yeast, knead the dough until it is "
        "smooth, let it rise for an hour, shape it into a loaf and bake it in a hot oven.",
        metadata={"topic": "food", "year": 2021},
    ),
    Document(
        id_="tides",
        text="Tides rise and fall twice a day, pulled by the moon; harbour pilots time the "
        "arrival of large ships to the high water.",
        metadata={"topic": "sea", "year": 2023},
    ),
]


def show(title, results):
    print(f"\n{title}")
    for hit in results:
        print(f"  {hit.score:7.4f}  {hit.node.ref_doc_id:<12} {hit.node.get_content()[:60]}...")


def main():
    Settings.llm = None  # retrieval only: LlamaIndex uses its MockLLM, never a remote one

    embed_model = VicinityEmbedding()  # the server's own model, at VICINITY_URL
    store = VicinityVectorStore(collection_name=COLLECTION)
    if store.client.collection_exists(COLLECTION):
        store.client.delete_collection(COLLECTION)

    info = store.client.info()
    print(f"server {info.version}, model {info.model} ({info.dimension} dimensions)")

    index = VectorStoreIndex.from_documents(
        DOCUMENTS,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
        # Nodes shorter than the model's input (256 tokens for all-MiniLM-L6-v2).
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=16)],
    )
    collection = store.client.get_collection(COLLECTION)
    print(f"collection {collection.name}: {collection.documents} nodes, source {collection.source}")

    question = "How are ships kept off the rocks at night?"
    show(f"dense: {question}", index.as_retriever(similarity_top_k=2).retrieve(question))
    show(
        "hybrid (BM25 + dense, alpha 0.5): harbour pilots",
        index.as_retriever(
            vector_store_query_mode="hybrid", alpha=0.5, similarity_top_k=2
        ).retrieve("harbour pilots"),
    )
    show(
        "text_search (BM25): yeast dough",
        index.as_retriever(vector_store_query_mode="text_search").retrieve("yeast dough"),
    )
    show(
        "mmr (lambda 0.3): ships",
        index.as_retriever(
            vector_store_query_mode="mmr",
            similarity_top_k=2,
            vector_store_kwargs={"mmr_threshold": 0.3},
        ).retrieve("ships"),
    )
    recent_sea = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="sea"),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.GT),
        ]
    )
    show(
        "filtered (topic == sea and year > 2020): ships",
        index.as_retriever(similarity_top_k=3, filters=recent_sea).retrieve("ships"),
    )

    engine = index.as_query_engine(response_mode="no_text", similarity_top_k=1)
    response = engine.query("What makes dough rise?")
    show("query engine (no_text): What makes dough rise?", response.source_nodes)

    index.delete_ref_doc("bread")
    left = sorted({node.ref_doc_id for node in store.get_nodes()})
    print(f"\nafter delete_ref_doc('bread'): {left}")

    store.client.delete_collection(COLLECTION)
    store.close()
    embed_model.close()


if __name__ == "__main__":
    main()
