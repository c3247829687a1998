"""The documentation a newcomer reads: a README for users under 15 KB, every relative link (and anchor) in it and
in the pages it leads to resolves inside the repository, and every page of docs/ is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 15_000  # bytes: the README is for users; details go to docs/
PAGES = [
    README,
    *sorted((ROOT / "docs").rglob("*.md")),
    *(ROOT / folder / "README.md" for folder in ("configs", "experiments", "reports")),
]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def without_code_blocks(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text()))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_code_blocks(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_the_readme_is_for_users_and_short():
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size:,} bytes (limit {README_LIMIT:,}): move details to docs/"
    for section in ("## Quick start", "## Use", "## Models", "## Results", "## Citation"):
        assert section in README.read_text(), f"README.md has no {section!r} section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here (no network in tests)
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: {file.relative_to(ROOT)} has no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if not SCHEME.match(t)}
    pages = sorted(p for p in (ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = [p.relative_to(ROOT).as_posix() for p in pages if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_the_link_checker_sees_broken_links(tmp_path):
    """The checker itself: a broken file, a broken anchor and a link inside code are told apart."""
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#two-words) [bad](missing.md) [anchor](a.md#nope) `[code](nowhere.md)`\n")
    assert links(page) == ["a.md#two-words", "missing.md", "a.md#nope"]
    assert anchors(tmp_path / "a.md") == {"title", "two-words"}
