"""MkDocs hook: the configuration reference, generated from `gateway/config.py` at build time.

Contract: in a page holding the marker `<!-- configuration-reference -->` (configuration.md),
`on_page_markdown` puts one table per section of the configuration schema in place of the
marker. Nothing in the table is kept by hand; every cell comes from the code the loader runs:

- setting: `section.field` for each dataclass in `config.SECTIONS`, and the fields of `Config`
  that are not sections (the top-level settings);
- environment: `config.env_names()`, the variables the loader reads, in its order of preference;
- default: the dataclass field's default (`empty` for None, "" and ());
- type: from the field's type hint; secrets are marked and may also come from a file;
- meaning: the field's `#:` comment lines in the dataclass source (the Sphinx convention for
  attribute documentation), and a section's class docstring above its table.

A field without a `#:` comment is an error (`UndocumentedSetting`), so `mkdocs build --strict` fails
when a new setting lands undocumented. Pure apart from reading the module's source.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints

from gateway import config as cfg

MARKER = "<!-- configuration-reference -->"
_FIELD = re.compile(r"^    (\w+)\s*:")
_DOC = re.compile(r"^    #:\s?(.*)$")


class UndocumentedSetting(Exception):
    """The schema cannot be documented (a setting has no description)."""


def field_docs(cls: type) -> dict[str, str]:
    """`#:` comments directly above each field of dataclass `cls`, joined into one paragraph."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        if doc := _DOC.match(line):
            pending.append(doc.group(1).strip())
        elif (name := _FIELD.match(line)) and not line.lstrip().startswith("#"):
            if pending:
                docs[name.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return docs


def _is_secret(hint: Any) -> bool:
    args = get_args(hint)
    return hint is cfg.Secret or cfg.Secret in args


def type_name(hint: Any) -> str:
    if _is_secret(hint):
        return "list of secrets" if get_args(hint)[-1] is Ellipsis else "secret"
    args = get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return "list of strings"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    return names[hint]


def default_text(f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default in (None, "", ()):
        return "empty"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(cls: type, section: str | None, names: list[str]) -> list[str]:
    """One Markdown table row per field in `names` of dataclass `cls`; `section` None: top level."""
    hints, docs = get_type_hints(cls), field_docs(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for name in names:
        f, hint = fields[name], hints[name]
        key = f"{section}.{name}" if section else name
        if name not in docs:
            raise UndocumentedSetting(f"{key}: no `#:` description in {cls.__name__}")
        env = cfg.env_names(section, name, f.metadata)
        meaning = docs[name]
        if _is_secret(hint):
            files = ", ".join(f"`{n}_FILE`" for n in env)
            meaning += f" Secret: may come from a file ({files}, or `{name}_file:` in YAML)."
        cells = [f"`{key}`", ", ".join(f"`{n}`" for n in env), default_text(f)]
        cells += [type_name(hint), _cell(meaning)]
        out.append("| " + " | ".join(cells) + " |")
    return out


_HEAD = ["| setting | environment | default | type | meaning |", "|---|---|---|---|---|"]


def reference() -> str:
    """The whole reference: top-level settings, then one section per `config.SECTIONS` entry."""
    top = [f.name for f in dataclasses.fields(cfg.Config) if f.name not in cfg.SECTIONS]
    parts = ["## Top level", "", *_HEAD, *rows(cfg.Config, None, top), ""]
    for section, cls in cfg.SECTIONS.items():
        names = [f.name for f in dataclasses.fields(cls)]
        # A dataclass without a docstring gets a generated one: its signature.
        intro = cls.__doc__ or ""
        parts += [f"## `{section}`", ""]
        if intro and not intro.startswith(cls.__name__ + "("):
            parts += [inspect.cleandoc(intro), ""]
        parts += [*_HEAD, *rows(cls, section, names), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
