"""The README is the front door: short, and every relative link in it (pages, images) resolves to a file.

Links inside docs/ are checked by `mkdocs build --strict` (`make docs-site`, run by .ci/run)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    """Targets of markdown links and images that are not URLs or in-page anchors, without their #anchor."""
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_finds_pages_and_images_and_skips_urls_and_anchors():
    text = "[a](docs/a.md#x) ![b](docs/b.png) [c](https://example.org/c.md) [d](#top) [e](mailto:x@y.z)"
    assert relative_links(text) == ["docs/a.md", "docs/b.png"]


def test_every_relative_link_in_readme_points_to_an_existing_file():
    links = relative_links(README.read_text())
    assert links, "README.md has no relative links: the parser or the README changed"
    missing = [t for t in links if not (ROOT / t).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_at_most_250_lines():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move guides and benchmark tables to docs/"


def test_every_docs_page_is_in_the_mkdocs_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    absent = [p for p in pages if not re.search(rf":\s*{re.escape(p)}\s*$", nav, re.M)]
    assert not absent, f"docs pages missing from mkdocs.yml nav: {absent}"
