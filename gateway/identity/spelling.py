"""One user, whatever the spelling: the key under which logins are limited and cached. Pure.

Phone keyboards capitalise the first letter of a username field and people type emails in
any case, so `Case.User@example.com`, ` case.user@example.com` and `CASE.USER@EXAMPLE.COM`
must share one failure budget and one cache entry. The key is the username stripped of
surrounding whitespace, NFKC-normalised (compatibility forms such as full-width letters fold
to their plain letters, Unicode TR15) and case-folded (Unicode's caseless matching, which also
folds `ß` to `ss`).

This key is for the gateway's own bookkeeping only; Cognito gets the username as typed (and,
for a pool that refuses a spelling with capitals, once more in lower case: see cognito.py).
"""

from __future__ import annotations

import unicodedata


def canonical(username: str) -> str:
    """The limiter and cache key for `username` (str → str; never raises)."""
    return unicodedata.normalize("NFKC", username.strip()).casefold()
