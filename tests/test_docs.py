"""The documentation site builds strictly, is complete, and the files the code cites exist.

The site (mkdocs.yml, docs/) is built once per module with `mkdocs build --strict` from a copy
of docs/ that also holds one new page in each folder other engineers add pages to, so the build
proves those pages join the navigation without an edit to mkdocs.yml.
"""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as cfg

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION_FOLDERS = ("deploy", "operations", "security", "users")


def hook(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_setting() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """`key -> (section, field)` for every setting the loader reads."""
    settings = {f.name: (None, f) for f in dataclasses.fields(cfg._TopLevel)}
    for section, cls in cfg.SECTIONS.items():
        settings.update({f"{section}.{f.name}": (section, f) for f in dataclasses.fields(cls)})
    return settings


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    shutil.copytree(DOCS, work / "docs")
    for folder in SECTION_FOLDERS:
        (work / "docs" / folder / "zz-added-later.md").write_text(
            f"# Added later to {folder}\n\nSee the [home page](../index.md).\n", encoding="utf-8"
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(work / "site")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "site"


def test_site_builds_strictly_and_pages_added_to_the_section_folders_join_the_navigation(site):
    home = (site / "index.html").read_text(encoding="utf-8")
    for folder in SECTION_FOLDERS:
        assert (site / folder / "index.html").exists(), folder
        assert f'href="{folder}/zz-added-later/"' in home, folder


def test_configuration_reference_shows_every_setting_with_its_variables_and_default(site):
    page = html.unescape((site / "configuration" / "index.html").read_text(encoding="utf-8"))
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr>\s*<td><code>([a-z_.]+)</code></td>.*?</tr>", page, re.S)
    }
    assert set(rows) == set(every_setting())
    for key, (section, f) in every_setting().items():
        cells = re.findall(r"<td>(.*?)</td>", rows[key], re.S)
        names = cfg.env_names(section, f.name, f.metadata)
        assert re.findall(r"<code>(.*?)</code>", cells[1]) == list(names), key
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default in (None, "", ()):
            assert cells[2] == "empty", key
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert cells[2] == f"<code>{shown}</code>", key
        assert len(cells[4]) > 20, f"{key}: no description"


def test_a_setting_without_a_description_fails_the_build():
    reference = hook("config_reference")
    with pytest.raises(reference.UndocumentedSetting, match="x.undocumented"):
        reference.rows(_Schema, "x", ["documented", "undocumented"])
    (row,) = reference.rows(_Schema, "x", ["documented"])
    assert row == (
        "| `x.documented` | `GATEWAY_X_DOCUMENTED` | `7` | integer | Two lines, one \\| cell. |"
    )


@dataclasses.dataclass(frozen=True)
class _Schema:
    #: Two lines,
    #: one | cell.
    documented: int = 7
    undocumented: str = ""


@pytest.mark.parametrize(
    ("page", "markdown", "repo_url", "expected"),
    [
        # Leaving docs/: the repository's file, linked when the site knows the repository.
        ("deploy/tls.md", "[Caddy](../../deploy/Caddyfile)", None, "Caddy (`deploy/Caddyfile`)"),
        ("index.md", "[bench/README.md](../bench/README.md)", None, "bench/README.md"),
        (
            "index.md",
            "[b](../bench/README.md#options)",
            "https://example.org/r/",
            "[b](https://example.org/r/blob/HEAD/bench/README.md#options)",
        ),
        # Inside docs/, anchors, absolute URLs and images: untouched.
        ("deploy/tls.md", "[up](../index.md)", None, "[up](../index.md)"),
        ("index.md", "[a](#here)", None, "[a](#here)"),
        ("index.md", "[w](https://example.org/x)", None, "[w](https://example.org/x)"),
        ("index.md", "![plot](bench/bench-1.png)", None, "![plot](bench/bench-1.png)"),
    ],
)
def test_links_to_repository_files_outside_docs(page, markdown, repo_url, expected):
    assert hook("repo_links").rewrite(markdown, page, repo_url) == expected


def test_readme_is_short_and_every_relative_link_in_it_resolves():
    assert len(README.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


CITING = ("gateway", "deploy", "lambda", "bench")


def cited_docs() -> set[str]:
    """Every `docs/....md` the code and deployment files cite, and the bare names of the notes."""
    cited = set()
    for folder in CITING:
        for path in (ROOT / folder).rglob("*"):
            if not path.is_file() or path.suffix in {".png", ".json", ".pyc"}:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            cited.update(re.findall(r"\bdocs/([\w/-]+\.md)", text))
            cited.update(re.findall(r"(?<![\w/.-])(anki-sync-protocol\.md|design\.md)", text))
    return cited


def test_every_document_the_code_cites_exists():
    cited = cited_docs()
    assert {"anki-sync-protocol.md", "design.md", "cognito.md"} <= cited
    missing = sorted(name for name in cited if not (DOCS / name).is_file())
    assert not missing, missing


ANKI_MESSAGES = [
    # What Anki shows (docs/anki-sync-protocol.md, "What the client shows"), and the wordings
    # the issue asks to find.
    "Email or password was incorrect",
    "authentication failed",
    "Only one copy of Anki can sync to your account at once",
    "Please use Check Database",
    "AnkiWeb encountered a problem. Please try again in a few minutes.",
    "Your Anki version is too old",
    "A network error occurred",
    "collection exceeds size limit",
]


@pytest.mark.parametrize("message", ANKI_MESSAGES)
def test_troubleshooting_is_keyed_by_what_anki_says(message):
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#{2,3} (.*)$", page, re.M)
    assert any(message.lower() in h.lower() for h in headings), message
