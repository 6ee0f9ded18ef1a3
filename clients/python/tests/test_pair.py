"""ClientPair: the sync and async clients of one server, built on first use."""

from __future__ import annotations

import asyncio

import pytest

from vicinity_client import AsyncVicinity, ClientPair, Vicinity


def test_builds_both_from_url_and_closes_only_its_own(server):
    pair = ClientPair(url=server.url)
    assert pair.sync.healthz()

    async def use() -> AsyncVicinity:
        client = pair.async_
        assert await client.healthz()
        assert pair.async_ is client  # the same loop: the same client
        return client

    first = asyncio.run(use())
    # Another loop: a client bound to the first one cannot serve it, so a new one is built.
    second = asyncio.run(use())
    assert second is not first
    pair.close()
    asyncio.run(pair.aclose())


def test_given_clients_are_used_as_they_are_and_left_open(server):
    with Vicinity(url=server.url) as client:
        pair = ClientPair(client=client, url=server.url)
        assert pair.sync is client
        pair.close()
        assert client.healthz()  # still open

        async def use() -> None:
            async with AsyncVicinity(url=server.url) as aclient:
                given = ClientPair(async_client=aclient, url=server.url)
                assert given.async_ is aclient
                await given.aclose()
                assert await aclient.healthz()  # still open

        asyncio.run(use())


def test_one_client_and_no_url_names_the_missing_argument(server):
    with Vicinity(url=server.url) as client:
        pair = ClientPair(client=client, async_client_arg="aclient")
        with pytest.raises(ValueError, match="aclient="):
            pair.async_

    async def use() -> None:
        async with AsyncVicinity(url=server.url) as aclient:
            pair = ClientPair(async_client=aclient)
            with pytest.raises(ValueError, match="client="):
                pair.sync

    asyncio.run(use())
