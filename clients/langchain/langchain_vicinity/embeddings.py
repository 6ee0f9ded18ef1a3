"""`VicinityEmbeddings`: LangChain embeddings computed by a vicinity server's own model."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from langchain_core.embeddings import Embeddings
from vicinity_client import AsyncVicinity, Vicinity

from vicinity_client import ClientPair

# The server takes at most 2048 inputs per request; smaller requests keep each one well
# inside the server's request timeout on a CPU-bound model.
DEFAULT_BATCH_SIZE = 256
MAX_BATCH_SIZE = 2048


class VicinityEmbeddings(Embeddings):
    """Embeddings from a vicinity server's `POST /v1/embeddings` (the server's loaded model).

    Args:
        url: The server, e.g. `http://127.0.0.1:8080`; `None` reads env `VICINITY_URL`.
        api_key: Sent as a bearer token; `None` reads env `VICINITY_API_KEY`.
        client: A `vicinity_client.Vicinity` to use instead of building one (not closed here).
        async_client: A `vicinity_client.AsyncVicinity` for the async methods (not closed here).
        model: Sent as OpenAI's `model` field; the server ignores it and embeds with the
            model it runs.
        batch_size: Inputs per request (1 to 2048); longer lists are sent in several requests.
        client_kwargs: Further arguments of the clients built here (`timeout`,
            `max_retries`, ...).

    Inputs longer than the model reads are refused by the server (400 `input_too_long`)
    unless it runs with `--auto-truncate`; errors are the client's typed exceptions.

    Example:
        ```python
        from langchain_vicinity import VicinityEmbeddings

        embeddings = VicinityEmbeddings(url="http://127.0.0.1:8080")
        vector = embeddings.embed_query("How do lighthouses warn ships?")
        ```
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        async_client: Optional[AsyncVicinity] = None,
        model: Optional[str] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        client_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self._clients = ClientPair(
            url=url,
            api_key=api_key,
            client=client,
            async_client=async_client,
            client_kwargs=client_kwargs,
        )

    @classmethod
    def _from_clients(cls, clients: ClientPair) -> "VicinityEmbeddings":
        """Embeddings sharing a store's clients (and their lifetime)."""
        self = cls.__new__(cls)
        self.model = None
        self.batch_size = DEFAULT_BATCH_SIZE
        self._clients = clients
        return self

    def _batches(self, texts: List[str]) -> List[List[str]]:
        return [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        """Embed texts, `batch_size` per request; one vector per text, in order."""
        vectors: List[List[float]] = []
        for batch in self._batches(list(texts)):
            vectors.extend(self._clients.sync.embeddings(batch, model=self.model))
        return vectors

    def embed_query(self, text: str) -> List[float]:
        """Embed one text."""
        return self._clients.sync.embeddings([text], model=self.model)[0]

    async def aembed_documents(self, texts: List[str]) -> List[List[float]]:
        """Embed texts, `batch_size` per request, on the async client."""
        vectors: List[List[float]] = []
        for batch in self._batches(list(texts)):
            vectors.extend(await self._clients.async_.embeddings(batch, model=self.model))
        return vectors

    async def aembed_query(self, text: str) -> List[float]:
        """Embed one text on the async client."""
        return (await self._clients.async_.embeddings([text], model=self.model))[0]

    def close(self) -> None:
        """Close the sync client if it was built here."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the async client if it was built here."""
        await self._clients.aclose()
