"""The answers that carry a quota message to a stock Anki client, by method. Pure.

    answer(upstream_path, message) -> (body, headers) of a 200, or None: no such answer there
                                      (the caller answers 413)

Measured with the anki 26.9 client (quota/__init__.py has the table): a full upload's answer
body other than "OK" is shown as the error (the stock server's own "collection exceeds size
limit" is one); a media request's JSON `err` is shown; a sync/meta answer with `cont: false`
stops the sync and shows `msg`. Every other method's errors show as "A network error occurred"
whatever the body says.
"""

from __future__ import annotations

import time

from gateway import protocol


def answer(upstream_path: str, message: str) -> tuple[bytes, dict[str, str]] | None:
    if upstream_path == "sync/upload":
        return protocol.encode_raw_answer(message.encode("utf-8"))
    if upstream_path.startswith("msync/"):
        return protocol.encode_answer({"data": None, "err": message})
    if upstream_path == "sync/meta":
        # The stock server's fields (rslib sync/collection/meta.rs, seen on the wire); the
        # client stops at `cont: false` before it compares any other.
        return protocol.encode_answer(
            {
                "mod": 0,
                "scm": 0,
                "usn": 0,
                "ts": int(time.time()),
                "msg": message,
                "cont": False,
                "hostNum": 0,
                "empty": False,
                "media_usn": 0,
            }
        )
    return None
