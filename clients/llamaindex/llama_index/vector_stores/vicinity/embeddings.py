"""`VicinityEmbedding`: LlamaIndex embeddings computed by a vicinity server's model.

With it, the vectors of a `VectorStoreIndex` come from the same model the server embeds
text collections and text queries with, so hybrid queries (whose dense leg the server embeds
itself) and dense queries agree.
"""

from typing import Any, Dict, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from vicinity_client import AsyncVicinity, ClientPair, Vicinity


__all__ = ["VicinityEmbedding"]

# Inputs per request. The server takes up to `--max-client-batch-size` (2048 by default) and
# batches them for its model itself; LlamaIndex splits larger lists into batches of this size.
DEFAULT_EMBED_BATCH_SIZE = 64


class VicinityEmbedding(BaseEmbedding):
    """Embeddings from a vicinity server (`POST /v1/embeddings`), sync and async, batched.

    The server refuses an input longer than its model reads (400 `input_too_long`, raised as
    `vicinity_client.BadRequestError`) unless it runs with `--auto-truncate`: split documents
    into nodes that fit (`GET /info` gives `max_input_tokens`), or set `truncate=True`,
    which asks for truncation per request (`POST /embed` with `truncate`).

    Args:
        url: The server (default: env ``VICINITY_URL``).
        api_key: Its API key (default: env ``VICINITY_API_KEY``); never stored on the model.
        client: A `vicinity_client.Vicinity` to use instead of making one.
        aclient: A `vicinity_client.AsyncVicinity` for the async methods.
        truncate: Cut inputs longer than the model reads instead of refusing them.
        embed_batch_size: Texts per request.
        client_kwargs: Further arguments of the clients this model makes.

    Examples:
        ```python
        from llama_index.vector_stores.vicinity import VicinityEmbedding

        embed_model = VicinityEmbedding(url="http://127.0.0.1:8080")
        vector = embed_model.get_query_embedding("How do lighthouses warn ships?")
        ```
    """

    url: Optional[str] = Field(default=None, description="The vicinity server.")
    truncate: bool = Field(
        default=False,
        description="Truncate inputs longer than the model reads instead of refusing them.",
    )

    _clients: ClientPair = PrivateAttr()

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        aclient: Optional[AsyncVicinity] = None,
        truncate: bool = False,
        model_name: str = "vicinity",
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        client_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        """Connect to (or reuse the clients of) a vicinity server; nothing is sent yet."""
        super().__init__(
            url=url,
            truncate=truncate,
            model_name=model_name,
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._clients = ClientPair(
            url=url,
            api_key=api_key,
            client=client,
            async_client=aclient,
            client_kwargs=client_kwargs,
            async_client_arg="aclient",
        )

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this class under."""
        return "VicinityEmbedding"

    @property
    def client(self) -> Vicinity:
        """The synchronous `vicinity_client.Vicinity`."""
        return self._clients.sync

    @property
    def aclient(self) -> AsyncVicinity:
        """The `vicinity_client.AsyncVicinity` of the async methods, made on first use."""
        return self._clients.async_

    def close(self) -> None:
        """Close the synchronous client, when this model made it."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close both clients, when this model made them."""
        await self._clients.aclose()
        self._clients.close()

    def _batches(self, texts: List[str]) -> List[List[str]]:
        size = max(1, self.embed_batch_size)
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def _embed(self, texts: List[str]) -> List[Embedding]:
        vectors: List[Embedding] = []
        for batch in self._batches(texts):
            if self.truncate:
                vectors.extend(self.client.embed(batch, truncate=True))
            else:
                vectors.extend(self.client.embeddings(batch))
        return vectors

    async def _aembed(self, texts: List[str]) -> List[Embedding]:
        vectors: List[Embedding] = []
        for batch in self._batches(texts):
            if self.truncate:
                vectors.extend(await self.aclient.embed(batch, truncate=True))
            else:
                vectors.extend(await self.aclient.embeddings(batch))
        return vectors

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([text]))[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return self._embed(texts)

    async def _aget_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return await self._aembed(texts)
