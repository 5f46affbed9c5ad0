"""Per-account storage quotas: collection size (as uploaded and on disk), media total, media
file size, enforced where the bytes arrive (the proxy), with answers a stock Anki client shows
as a message, never a logout.

    limits.py       `Limits`, the operator's `Override`, the rules and their messages (pure)
    guard.py        `QuotaGuard`: the sizes on disk and the checks the proxy runs
    mediatotal.py   an account's media total, shared by every gateway process (a file)
    livesize.py     how much of a collection file SQLite uses (header and WAL)
    growth.py       whether a normal sync request adds to the collection (pure)
    graves.py       how many deletions (graves) a sync request carries (pure)
    allowance.py    the graves an account over its collection limit may still send (a file)
    usage.py        usage against the limits, for the portal, `accounts list` and the metrics

What the client shows for each refusal (measured with the anki 26.9 client; tests/quota/):

- sync/upload over a limit: 200 with the message as the body, as the stock server answers an
  oversized collection. Anki shows the message; nothing is replaced; the next upload under the
  limit works.
- msync/uploadChanges over a limit: 200 `{"data": null, "err": message}`. Anki shows the
  message and media sync stops; the next one under the limit works. (A 413 there shows "A
  network error occurred" instead.)
- applyChanges, applyChunk that add to a collection over its limit (growth.py; deletions,
  full downloads and uploads within the limit pass): 413, "A network error occurred"; the
  client sends sync/abort and the worker rolls the sync back.
- start, applyGraves to a collection over its limit whose graves are past the account's
  deletion allowance (allowance.py: 100,000 ids a stretch): 413 as above, with its own
  message at the next sync/meta.
- the account's next sync/meta after such a refusal: 200, a meta answer with `cont: false` and
  the message (the protocol's own way to stop a sync with a message), once. Anki shows it;
  nothing is applied.
"""

from gateway.quota.guard import QuotaGuard
from gateway.quota.limits import Limits, OverQuota, Override

__all__ = ["Limits", "OverQuota", "Override", "QuotaGuard"]
