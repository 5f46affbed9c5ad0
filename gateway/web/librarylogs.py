"""aiohttp's own log records, made as safe as the gateway's.

aiohttp answers a malformed request (a control character in a header value, a line over
8 KiB, a broken chunked body) with 400 before the gateway's middleware runs, and logs it on
`aiohttp.server` at ERROR with a traceback whose message quotes the raw line: an `anki-sync`
header with a host key, an `X-API-Key`. Any stranger could fill the log with those, at ERROR.
`tame()` rewrites such records; `install()` puts it on every aiohttp logger (a filter on a
logger sees only that logger's own records, so each one gets it).

    aiohttp.access                       dropped: the gateway logs every request itself, and
                                         aiohttp's line carries the User-Agent and Referer
    a malformed request (HttpProcessingError), or a body aiohttp cannot decode
    (RequestPayloadError)                INFO "malformed request refused", the error's class
                                         and status, the client address; no traceback
    a client gone (ConnectionError)      INFO "client gone", no traceback
    any other record with a traceback    same level, the traceback's frames and the exception's
                                         class, not its message (it may quote the request)
    anything else                        unchanged

Records arrive from aiohttp; no header value ever leaves this filter.
"""

from __future__ import annotations

import logging
import traceback

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

# A malformed request, or a body aiohttp could not decode (its Content-Encoding, say) while it
# drained what the handler left unread.
_MALFORMED = (HttpProcessingError, RequestPayloadError)

#: Every logger aiohttp has (aiohttp/log.py).
LOGGERS = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
)
_DROPPED = frozenset({"aiohttp.access"})
# aiohttp's "Error handling request from %s": the one argument is the peer address.
_FROM_PEER = "Error handling request from %s"


def tame(record: logging.LogRecord) -> bool:
    """Rewrites `record` in place (see module doc); False drops it."""
    if record.name in _DROPPED:
        return False
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return True
    client = record.args[0] if record.msg == _FROM_PEER and record.args else None
    if isinstance(exc, _MALFORMED):
        _replace(record, logging.INFO, "malformed request refused", exc, client)
        if isinstance(exc, HttpProcessingError):
            record.status = exc.code
    elif isinstance(exc, ConnectionError):
        _replace(record, logging.INFO, "client gone", exc, client)
    else:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        record.exc_text = f"{frames}{type(exc).__name__} (message withheld)"
        record.exc_info = None
        if client is not None:
            record.msg, record.client = "error handling request", str(client)
        record.args = ()  # the format string stays; its arguments may quote the request
        record.error = type(exc).__name__
    return True


def _replace(
    record: logging.LogRecord, level: int, msg: str, exc: BaseException, client: object
) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)
    record.msg, record.args = msg, ()
    record.exc_info, record.exc_text = None, None
    record.error = type(exc).__name__
    if client is not None:
        record.client = str(client)


class _Tame(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return tame(record)


_FILTER = _Tame()


def install() -> None:
    """Adds the filter to every aiohttp logger; idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
