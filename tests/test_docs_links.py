"""
Every relative link and image in README.md and docs/**/*.md points to a file or folder of the repository.

Checked: ``[text](target)``, ``![alt](target)``, reference definitions ``[label]: target`` and
``<img src="target">``, outside fenced code blocks and inline code. Skipped: links with a scheme
(``http:``, ``https:``, ``mailto:``, ...); a ``?query`` suffix is stripped from a path. A target is relative
to the page that holds it (``/...``: to the repository root). A ``#anchor`` (alone: this page; after a
``.md`` path: that page) must name one of the page's headings as GitHub makes its anchor
(:func:`heading_anchors`): a renamed section breaks the links to it, and the reader lands at the top.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target "title") and ![alt](target); the text may hold one level of brackets; <target> allowed
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
MD_LINK_TEXT = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def link_targets(text: str) -> list[str]:
    """The link and image targets of a Markdown text, in order, code left out."""
    text = FENCE.sub("", text)
    text = INLINE_CODE.sub("", text)
    targets = [m.group(1) for m in INLINE_LINK.finditer(text)]
    targets += [m.group(1) for m in REFERENCE_DEF.finditer(text)]
    targets += [m.group(1) if m.group(1) is not None else m.group(2) for m in IMG_SRC.finditer(text)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def heading_anchors(text: str) -> set[str]:
    """
    The anchors GitHub gives the ATX headings (``## Title``) of a Markdown text: the heading's text as
    rendered (code spans keep their content, a link its text, emphasis marks go), lower-cased, every
    character but letters, digits, ``_``, ``-`` and spaces dropped, spaces made ``-``; a repeated anchor
    gets ``-1``, ``-2``, ... in order.
    """
    anchors: set[str] = set()
    for heading in ATX_HEADING.findall(FENCE.sub("", text)):
        rendered = MD_LINK_TEXT.sub(r"\1", heading).replace("`", "")
        rendered = re.sub(r"(\*{1,3}|_{1,3})(\S(?:.*?\S)?)\1", r"\2", rendered)
        anchor = re.sub(r"[^\w\- ]", "", rendered.strip().lower()).replace(" ", "-")
        unique, n = anchor, 0
        while unique in anchors:
            n += 1
            unique = f"{anchor}-{n}"
        anchors.add(unique)
    return anchors


def missing_targets(page: Path, root: Path = ROOT) -> list[str]:
    """The relative targets of ``page`` that name nothing in ``root`` (or point outside it), or a heading
    its page does not have."""
    missing = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path.split("?", 1)[0])
        resolved = page
        if path:
            resolved = ((root / path.lstrip("/")) if path.startswith("/") else (page.parent / path)).resolve()
            if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
                missing.append(target)
                continue
        if anchor and resolved.suffix == ".md" and resolved.is_file():
            if unquote(anchor) not in heading_anchors(resolved.read_text(encoding="utf-8")):
                missing.append(target)
    return missing


def test_the_pages_are_there():
    names = [p.relative_to(ROOT).as_posix() for p in pages()]
    assert "README.md" in names and any(n.startswith("docs/") for n in names), names


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_exists(page):
    missing = missing_targets(page)
    name = page.relative_to(ROOT).as_posix()
    assert not missing, f"{name}: links to what is not in the repository: " + ", ".join(missing)


def test_a_missing_target_is_found(tmp_path):
    """The checker itself, on real files: a broken link and image are reported, good and skipped ones not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "curve.png").write_bytes(b"")
    (tmp_path / "hyperparams").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "![a curve](curve.png) [config](../hyperparams/) [top](#results) [web](https://example.org/x.md)\n"
        "[mail](mailto:a@b.c) [section](curve.png#part) [root](/docs/curve.png)\n"
        "`[in code](nothere.md)`\n```\n[in a fence](nothere_either.md)\n```\n"
        "[broken](missing.md) ![gone](curves/none.png) <img src=\"lost.gif\"> [out](../../outside.md)\n"
        "[here](#results) [renamed](#old-name) [there](other.md#time-to-40-and-to-100) [gone](other.md#nope)\n"
        "[twice](other.md#setup-1) [code](other.md#--resume-and-checkpoints)\n"
        "## Results\n"
        "[ref]: also_missing.md\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "other.md").write_text(
        "# Setup\n## Time to 40, and to **100**\n### `--resume` and [checkpoints](page.md)\n"
        "## Setup\n```\n## In a fence\n```\n", encoding="utf-8")
    assert missing_targets(page, root=tmp_path) == [
        "missing.md", "curves/none.png", "../../outside.md", "#old-name", "other.md#nope", "also_missing.md",
        "lost.gif"]
    assert heading_anchors((tmp_path / "docs" / "other.md").read_text()) == {
        "setup", "time-to-40-and-to-100", "--resume-and-checkpoints", "setup-1"}
