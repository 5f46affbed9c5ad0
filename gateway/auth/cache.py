"""Credential cache: remembers successful logins for a while, and only successful ones.

Keyed by the username's canonical spelling (identity/spelling.py; the caller passes it) and an
HMAC of the password under a random key made at start-up:
no password and no plain hash is kept, and a wrong password can never ride on a cached success
(the earlier system keyed by username alone and let exactly that happen). Bounded, with a TTL
and an injected clock; `SingleFlight` makes concurrent identical logins share one provider call.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class CredentialCache(Generic[V]):
    def __init__(
        self, ttl: float, maxsize: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: TTLCache[tuple[str, bytes], V] = TTLCache(maxsize, ttl, timer=clock)
        self._pepper = secrets.token_bytes(32)
        # tag → keys, and key → tags: `forget_tags` finds entries without a scan of the cache.
        # Expired entries leave stale keys behind; the index is rebuilt when it outgrows twice
        # the cache (amortised O(1) per put).
        self._by_tag: dict[str, set[tuple[str, bytes]]] = {}
        self._tags_of: dict[tuple[str, bytes], tuple[str, ...]] = {}

    def key(self, username: str, password: str) -> tuple[str, bytes]:
        mac = hmac.new(self._pepper, digestmod=hashlib.sha256)
        mac.update(username.encode("utf-8", "surrogatepass"))
        mac.update(b"\0")
        mac.update(password.encode("utf-8", "surrogatepass"))
        return username, mac.digest()

    def get(self, key: tuple[str, bytes]) -> V | None:
        return self._entries.get(key)

    def put(self, key: tuple[str, bytes], value: V, tags: Iterable[str] = ()) -> None:
        """Remember `value`; `tags` (e.g. "sub:<sub>") let `forget_tags` find it later."""
        self._entries[key] = value
        self._untag(key)
        tags = tuple(dict.fromkeys(tags))
        if tags:
            self._tags_of[key] = tags
            for tag in tags:
                self._by_tag.setdefault(tag, set()).add(key)
        if len(self._tags_of) > 2 * len(self._entries) + 1024:
            self._reindex()

    def forget_tags(self, tags: Iterable[str], keep: tuple[str, bytes] | None = None) -> int:
        """Drop every entry carrying one of `tags`, except `keep`; returns how many went."""
        doomed = {k for tag in tags for k in self._by_tag.get(tag, ())} - {keep}
        dropped = 0
        for key in doomed:
            dropped += self._entries.pop(key, None) is not None
            self._untag(key)
        return dropped

    def forget(self, predicate: Callable[[tuple[str, bytes], V], bool]) -> int:
        """Drop every entry whose (key, value) matches, e.g. all logins of a disabled account;
        returns how many were dropped."""
        doomed = [k for k, v in list(self._entries.items()) if predicate(k, v)]
        for k in doomed:
            self._entries.pop(k, None)
            self._untag(k)
        return len(doomed)

    def _untag(self, key: tuple[str, bytes]) -> None:
        for tag in self._tags_of.pop(key, ()):
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def _reindex(self) -> None:
        live = {k: t for k, t in self._tags_of.items() if k in self._entries}
        self._tags_of, self._by_tag = live, {}
        for key, tags in live.items():
            for tag in tags:
                self._by_tag.setdefault(tag, set()).add(key)

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[V]):
    """Concurrent calls with the same key await one shared call; its result or error is shared."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[V]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[V]]) -> V:
        future = self._inflight.get(key)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await call()
        except BaseException as exc:
            future.set_exception(exc)
            # Mark retrieved: when nobody else was waiting, this is not an "unhandled" error.
            future.exception()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._inflight.pop(key, None)
