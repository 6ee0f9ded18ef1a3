"""LlamaIndex integration of vicinity: a vector store and an embedding model.

``VicinityVectorStore`` keeps LlamaIndex nodes in a vicinity collection and answers dense,
MMR, lexical and hybrid queries with metadata filters on the server; ``VicinityEmbedding``
embeds text with the server's own model.
"""

from llama_index.vector_stores.vicinity.base import VicinityVectorStore
from llama_index.vector_stores.vicinity.embeddings import VicinityEmbedding
from llama_index.vector_stores.vicinity.filters import (
    UnsupportedFilterError,
    to_vicinity_filter,
)

__all__ = [
    "VicinityVectorStore",
    "VicinityEmbedding",
    "UnsupportedFilterError",
    "to_vicinity_filter",
]
