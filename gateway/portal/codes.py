"""Local mode's confirmation and reset codes: random, single-use, short-lived, printed locally.

Cognito emails a code and checks it; the stand-in (moto) sends nothing and accepts any code, so
with local mode on a network address anyone could confirm any sign-up or reset any password
(`/account/forgot`, then `/account/reset` with `000000`). This book issues the codes instead:

    issue(purpose, email)        -> str    six random digits (`secrets`), replacing an older one
    check(purpose, email, code)  -> None   raises WrongCode or ExpiredCode; a right code is used up

`purpose` is "confirm" or "reset" (a sign-up code does not reset a password). Emails compare
case-folded. A code lives `ttl` seconds (Cognito: 24 h for sign-up, 1 h for reset; one hour here
for both) and survives at most `MAX_WRONG` wrong tries, after which it is void. Comparison is
constant-time. At most `MAX_CODES` codes are kept (the oldest go first). The clock is injected.

Pure: announcing a code (local mode prints it on its console, and nowhere else) is the caller's.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.portal.directory import ExpiredCode, WrongCode

TTL_SECONDS = 3600.0
MAX_WRONG = 5
MAX_CODES = 10_000
DIGITS = 6


def random_code() -> str:
    return f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"


@dataclass
class _Entry:
    code: str
    expires: float
    wrong: int = 0


class CodeBook:
    def __init__(
        self,
        *,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        generate: Callable[[], str] = random_code,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._generate = generate
        self._codes: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def issue(self, purpose: str, email: str) -> str:
        key = (purpose, email.casefold())
        code = self._generate()
        self._codes.pop(key, None)
        self._codes[key] = _Entry(code, self._clock() + self._ttl)
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def check(self, purpose: str, email: str, code: str) -> None:
        key = (purpose, email.casefold())
        entry = self._codes.get(key)
        if entry is None:
            raise WrongCode()
        if self._clock() >= entry.expires:
            del self._codes[key]
            raise ExpiredCode("That code has expired — ask for a new one.")
        if not hmac.compare_digest(entry.code.encode(), code.strip().encode()):
            entry.wrong += 1
            if entry.wrong >= MAX_WRONG:
                del self._codes[key]
            raise WrongCode()
        del self._codes[key]
