"""Every relative link in the user-facing Markdown files points at a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_targets(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def test_relative_targets_skip_urls_and_anchors():
    text = "[a](docs/x.png) [b](https://x.org) [c](#usage) ![d](benchmarks/results/y.png)"
    assert relative_targets(text) == ["docs/x.png", "benchmarks/results/y.png"]


@pytest.mark.parametrize("page", ["README.md", "BENCHMARKS.md"])
def test_links_resolve(page):
    targets = relative_targets((ROOT / page).read_text())
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"{page} links to missing files: {missing}"
