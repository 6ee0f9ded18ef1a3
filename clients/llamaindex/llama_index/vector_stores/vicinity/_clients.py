"""The pair of vicinity clients a store or an embedding model talks through."""

from typing import Any, Dict, Optional

from vicinity_client import AsyncVicinity, Vicinity


class Clients:
    """A sync `Vicinity` and an async `AsyncVicinity`, given or made from `url`/`api_key`.

    The async client is made on first use: an `httpx.AsyncClient` belongs to the event loop
    that first uses it, and a store is often built outside any loop. Only clients made here
    are closed here; the caller closes the ones it gave.
    """

    def __init__(
        self,
        owner: str,
        url: Optional[str],
        api_key: Optional[str],
        client: Optional[Vicinity],
        aclient: Optional[AsyncVicinity],
        client_kwargs: Optional[Dict[str, Any]],
    ) -> None:
        self._owner = owner
        self._url = url
        self._api_key = api_key
        self._kwargs = dict(client_kwargs or {})
        self._owns_sync = client is None
        self.sync = client if client is not None else self._make(Vicinity)
        self._async = aclient
        self._owns_async = False
        # With a sync client and no url, an async client made from `url=None` would go to
        # `VICINITY_URL` or the default address, not necessarily where `client` goes.
        self._async_unknown = client is not None and url is None and aclient is None

    def _make(self, cls: Any) -> Any:
        return cls(url=self._url, api_key=self._api_key, **self._kwargs)

    @property
    def async_(self) -> AsyncVicinity:
        """The async client, made on first use when none was given."""
        if self._async is None:
            if self._async_unknown:
                raise ValueError(
                    f"{self._owner} was given a `client` but neither `aclient` nor `url`: "
                    "pass `aclient=AsyncVicinity(...)` (or `url=`) to use the async methods"
                )
            self._async = self._make(AsyncVicinity)
            self._owns_async = True
        return self._async

    def close(self) -> None:
        """Close the sync client, when it was made here."""
        if self._owns_sync:
            self.sync.close()

    async def aclose(self) -> None:
        """Close both clients, when they were made here."""
        if self._owns_async and self._async is not None:
            await self._async.aclose()
            self._async = None
            self._owns_async = False
        self.close()
