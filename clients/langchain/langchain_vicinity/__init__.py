"""LangChain integration of vicinity: a vector store over a vicinity collection
(`VicinityVectorStore`) and the server's embeddings (`VicinityEmbeddings`)."""

from langchain_vicinity.embeddings import VicinityEmbeddings
from langchain_vicinity.vectorstores import VicinityVectorStore

__version__ = "0.1.0"

__all__ = ["VicinityEmbeddings", "VicinityVectorStore", "__version__"]
