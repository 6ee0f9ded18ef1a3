"""A sync and an async client for one server, for objects that offer both kinds of methods
(the LangChain and LlamaIndex stores, their embedding classes)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional

from ._async_client import AsyncVicinity
from ._client import Vicinity


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ClientPair:
    """A :class:`Vicinity` and an :class:`AsyncVicinity` for one server, given or built from
    ``url``, ``api_key`` and ``client_kwargs`` on first use, so that building the owner does
    no work and a program that uses one kind of method never opens the other client.

    Clients passed in belong to the caller: they are used as they are and never closed here.
    Clients built here are closed by :meth:`close` / :meth:`aclose`. ``client_arg`` and
    ``async_client_arg`` are the owner's names for the two clients, for its error messages.
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        async_client: Optional[AsyncVicinity] = None,
        client_kwargs: Optional[Dict[str, Any]] = None,
        client_arg: str = "client",
        async_client_arg: str = "async_client",
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.client_kwargs = dict(client_kwargs or {})
        self._client = client
        self._async_client = async_client
        self._owns_client = client is None
        self._owns_async_client = async_client is None
        self._async_loop: Optional[asyncio.AbstractEventLoop] = None
        self._client_arg = client_arg
        self._async_client_arg = async_client_arg

    def _check_can_build(self, kind: str, given: str) -> None:
        # Given one client and no url, building the other from VICINITY_URL (or the default
        # address) could talk to another server than the one the caller chose.
        caller_gave_other = not (self._owns_async_client and self._owns_client)
        if self.url is None and caller_gave_other:
            raise ValueError(
                f"a {kind} call needs a {kind} client: pass `{given}=` "
                "(or `url=`, to build both clients) beside the client you gave"
            )

    def _build(self, cls: Any) -> Any:
        return cls(url=self.url, api_key=self.api_key, **self.client_kwargs)

    @property
    def sync(self) -> Vicinity:
        """The sync client (built on first use when none was given)."""
        if self._client is None:
            self._check_can_build("sync", self._client_arg)
            self._client = self._build(Vicinity)
        return self._client

    @property
    def async_(self) -> AsyncVicinity:
        """The async client; use it from inside the event loop that will await it.

        An httpx async client keeps connections bound to the loop that opened them, so a
        client built here is rebuilt when it is used from another loop (as with one
        ``asyncio.run`` after another). A client the caller gave is used as it is.
        """
        if self._async_client is not None and not self._owns_async_client:
            return self._async_client
        if self._async_client is None:
            self._check_can_build("async", self._async_client_arg)
        loop = _running_loop()
        if self._async_client is not None and self._async_loop is loop:
            return self._async_client
        # The previous client's loop is gone or elsewhere: it cannot be closed from here, and
        # dropping it releases its sockets when it is collected.
        self._async_client = self._build(AsyncVicinity)
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
            if self._async_loop is _running_loop():
                await self._async_client.aclose()
            self._async_client = None
            self._async_loop = None
