"""The log formats: one record is one line, whatever a client put into it."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gateway.logs import JsonFormatter, TextFormatter, escape

FORGED = "/sync/meta\n2026-01-01 00:00:00,000 ERROR   gateway: forged\r\u2028\x85\x1b[31m"


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("gateway", logging.INFO, __file__, 1, "request %s", (FORGED,), None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain /sync/meta", "plain /sync/meta"),
        ("a\nb", "a\\x0ab"),
        ("tab\there", "tab\\x09here"),
        ("\x00\x7f\x85", "\\x00\\x7f\\x85"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("ümlaut ✓", "ümlaut ✓"),
    ],
)
def test_escape_makes_control_characters_visible(raw, escaped):
    assert escape(raw) == escaped


def test_text_format_is_one_line_whatever_the_path():
    line = TextFormatter().format(record(path=FORGED))
    assert len(line.splitlines()) == 1
    assert "\\x0a2026-01-01" in line


def test_json_format_is_one_line_and_keeps_the_value():
    line = JsonFormatter().format(record(path=FORGED))
    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["path"] == FORGED and entry["msg"] == "request " + FORGED


def test_text_traceback_lines_are_indented_so_none_looks_like_a_record():
    try:
        raise ValueError(FORGED)
    except ValueError:
        rec = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    first, *rest = TextFormatter().format(rec).splitlines()
    assert "boom" in first and rest
    assert all(part.startswith("    ") for part in rest)
