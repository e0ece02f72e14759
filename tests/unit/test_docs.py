"""The README and the documentation site: links resolve, every page is in the site.

``make docs`` (run by ``make test``) builds the site with ``mkdocs build --strict``, which
checks the links between pages. The README lives outside ``docs/``, so MkDocs never sees it:
its links are checked here, anchors included.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"

# [text](target) outside code spans; targets with a scheme (https:, mailto:) are external.
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _links(markdown: str) -> list[str]:
    """Relative link targets of a Markdown text, code blocks and code spans left out."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in _LINK.findall(text) if not _EXTERNAL.match(t)]


def _anchors(page: Path) -> set[str]:
    """The heading ids MkDocs gives a page (Python-Markdown's ``toc`` slugs)."""
    toc = pytest.importorskip("markdown.extensions.toc", reason="the docs extra is not installed")
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE)
    return {toc.slugify(h, "-") for h in headings}


def _nav_pages() -> set[str]:
    """Pages named in mkdocs.yml's nav (the file is plain YAML; read without a YAML parser)."""
    text = (REPO / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE))


def test_readme_fits_on_a_few_screens() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_readme_links_resolve() -> None:
    links = _links(README.read_text())
    assert links, "the README links no documentation page"
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        file = (REPO / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with id {anchor!r} in {path}")
    assert not broken, "README.md: " + "; ".join(broken)


def test_every_page_is_in_the_site_nav() -> None:
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.glob("*.md")}
    nav = _nav_pages()
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"


def test_gates_files_in_the_docs_parse(tmp_path: Path) -> None:
    """The gates TOML shown to users is accepted by the bench (README and the bench page)."""
    from medseg.bench.gate_spec import GateSpec

    blocks = [
        block
        for page in (README, DOCS / "bench.md")
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(), flags=re.DOTALL)
    ]
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"gates{i}.toml"
        path.write_text(block)
        assert not GateSpec.from_toml(path).empty
