"""MkDocs hook: Markdown links from a page to repository files outside `docs/`.

The pages link to files such as `../deploy/nginx.conf` so that they work when read on GitHub.
The site holds only `docs/`, so MkDocs cannot resolve those links (with `--strict` each one
fails the build). `on_page_markdown` rewrites each such link, at build time only:

- with `repo_url` set in mkdocs.yml: to `<repo_url>/blob/HEAD/<path in the repository>`;
- without it: to the link's text followed by the repository path in code, unlinked.

Links inside `docs/`, absolute URLs and anchors are left alone. Pure string handling.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

# [text](target) with a relative target; images (![...]) are left alone.
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s:#]+)(#[^)\s]*)?\)")


def outside_path(page_src: str, target: str) -> str | None:
    """The repository path `target` names from page `page_src` (relative to docs/), if outside."""
    joined = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), target))
    if joined == "docs" or joined.startswith("docs/") or joined.startswith(".."):
        return None
    return joined


def rewrite(markdown: str, page_src: str, repo_url: str | None) -> str:
    def one(match: re.Match[str]) -> str:
        text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        path = outside_path(page_src, target)
        if path is None:
            return match.group(0)
        if repo_url:
            return f"[{text}]({repo_url.rstrip('/')}/blob/HEAD/{path}{anchor})"
        return text if path in text else f"{text} (`{path}`)"

    return _LINK.sub(one, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, **_: Any) -> str:
    return rewrite(markdown, page.file.src_uri, config.get("repo_url"))
