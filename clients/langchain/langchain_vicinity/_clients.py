"""The sync and async vicinity clients that a store or an embeddings object talks through.

Both are built on first use, so that constructing a LangChain object does no I/O and a
program that only ever uses one flavour never opens the other.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional

from vicinity_client import AsyncVicinity, Vicinity


class ClientPair:
    """A `Vicinity` and an `AsyncVicinity` for one server, given or built from `url`.

    Clients passed in belong to the caller: they are used as they are and never closed here.
    Clients built here are closed by `close` / `aclose`.
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        async_client: Optional[AsyncVicinity] = None,
        client_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.client_kwargs = dict(client_kwargs or {})
        self._client = client
        self._async_client = async_client
        self._owns_client = client is None
        self._owns_async_client = async_client is None
        self._async_loop: Optional[asyncio.AbstractEventLoop] = None

    def _check_can_build(self, flavour: str, given: str) -> None:
        # Given one client and no url, building the other from VICINITY_URL (or the default
        # address) could talk to another server than the one the caller chose.
        caller_gave_other = not (self._owns_async_client and self._owns_client)
        if self.url is None and caller_gave_other:
            raise ValueError(
                f"a {flavour} call needs a {flavour} client: pass `{given}=` "
                "(or `url=`, to build both clients) beside the client you gave"
            )

    @property
    def sync(self) -> Vicinity:
        """The sync client (built on first use when none was given)."""
        if self._client is None:
            self._check_can_build("sync", "client")
            self._client = Vicinity(url=self.url, api_key=self.api_key, **self.client_kwargs)
        return self._client

    @property
    def async_(self) -> AsyncVicinity:
        """The async client; call it from inside the event loop that will await it.

        An httpx async client keeps connections bound to the loop that opened them, so a
        client built here is rebuilt when it is used from another loop (as with one
        `asyncio.run` after another). A client the caller gave is used as it is.
        """
        loop = asyncio.get_running_loop()
        if self._async_client is not None and (
            not self._owns_async_client or self._async_loop is loop
        ):
            return self._async_client
        if self._async_client is None:
            self._check_can_build("async", "async_client")
        # The previous client's loop is gone or elsewhere: it cannot be closed from here, and
        # dropping it releases its sockets when it is collected.
        self._async_client = AsyncVicinity(
            url=self.url, api_key=self.api_key, **self.client_kwargs
        )
        self._async_loop = loop
        return self._async_client

    def close(self) -> None:
        """Close the sync client if it was built here."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the async client if it was built here (from the loop it belongs to)."""
        if self._owns_async_client and self._async_client is not None:
            if self._async_loop is asyncio.get_running_loop():
                await self._async_client.aclose()
            self._async_client = None
            self._async_loop = None
