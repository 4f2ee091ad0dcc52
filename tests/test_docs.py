"""The README stays short and the manual in docs/ holds together: every page is listed, every
link between pages lands on a file and, with an anchor, on one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(page: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` in code is not a link)."""
    return re.sub(r"(?ms)^```.*?^```", "", page.read_text())


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces turned into hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", _prose(page))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _local_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page)) if not re.match(r"[a-z]+:", t)]


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 150, "the manual goes in docs/, not the README"


@pytest.mark.parametrize("index", [README, DOCS / "README.md"], ids=["README", "docs/README"])
def test_every_docs_page_is_linked_from_the_indexes(index: Path):
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in _local_links(index)}
    missing = [p.name for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"{index.relative_to(ROOT)} does not link {missing}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_pages_land_on_a_file_and_heading(page: Path):
    for target in _local_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: {target} names no file"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target} names no heading"
