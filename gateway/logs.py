"""Structured logging: one JSON object a line, with the request id when there is one.

Nothing secret is ever passed to a logger: callers log account names and subs, never passwords,
host keys, API keys or Cognito tokens. `redact()` is for the one place that logs foreign text
(worker output), in case a future server version prints a credential. Library records are made
safe before they get here (web/librarylogs.py).

Both formats escape control characters (C0, DEL, C1, and the Unicode line and paragraph
separators) in everything a client can influence, such as a request path with `%0a` in it: one
record is always one line, and no client can forge a line. A traceback (text format) continues
on lines indented by four spaces, so those never look like a record either.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRETISH = re.compile(r"(?i)\b([0-9a-f]{40})\b|((?:password|secret|key|token)\W{0,3}[:=]\s*)\S+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What json.dumps(ensure_ascii=False) leaves unescaped of the above (it escapes C0 itself).
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029]")
#: One encoder for every line: `json.dumps` with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def redact(text: str) -> str:
    return _SECRETISH.sub(
        lambda m: "[redacted-key]" if m.group(1) else m.group(2) + "[redacted]", text
    )


def escape(text: str) -> str:
    r"""`text` with every control character as a visible escape: "a\nb" → "a\\x0ab"."""
    return _CONTROL.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def exception_text(record: logging.LogRecord) -> str:
    """The record's traceback: `exc_text` if a filter already set it, else from `exc_info`."""
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return ""


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    #: Each line names its process (several gateway processes share one log: processes/).
    with_pid = False
    _second = -1
    _second_text = ""

    def _timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.with_pid:
            entry["pid"] = record.process
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        entry.update(_extras(record))
        exc = exception_text(record)
        if exc:
            entry["exc"] = exc
        line = _ENCODER.encode(entry)
        if line.isascii() and "\x7f" not in line:
            return line  # nothing to escape (most lines): no pattern run
        return _JSON_UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


class TextFormatter(logging.Formatter):
    with_pid = False

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id.get()
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {escape(record.name)}: "
            f"{escape(record.getMessage())}"
        )
        if self.with_pid:
            line += f" pid={record.process}"
        if rid:
            line += f" request_id={rid}"
        line += "".join(f" {escape(k)}={escape(str(v))}" for k, v in _extras(record).items())
        exc = exception_text(record)
        if exc:
            line += "".join(f"\n    {escape(part)}" for part in exc.splitlines())
        return line


def configure(level: str = "INFO", fmt: str = "json", *, with_pid: bool = False) -> None:
    """One handler on the root logger; `with_pid`: each line names its process."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    formatter.with_pid = with_pid
    handler.setFormatter(formatter)
    # Fields no line shows, gathered for every record by default (the logging HOWTO's
    # "Optimization"): the caller's file and line (a stack walk), thread and multiprocessing
    # names. One line per request made them a quarter of the cost of logging it.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore's debug logs carry request bodies. aiohttp's records are tamed (web/librarylogs.py).
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("boto3").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
