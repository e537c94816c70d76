"""The README's pictures exist in the repository, and the script it names makes them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_readme_picture_is_a_png_in_the_repository():
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 2
    for rel in pictures:
        path = ROOT / rel
        assert path.is_file(), rel
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
        assert path.stat().st_size < 200_000, rel  # small pictures, not screenshots
    script = ROOT / "examples" / "readme_figures.py"
    assert "examples/readme_figures.py" in text and script.is_file()
    for rel in pictures:
        assert Path(rel).name in script.read_text(), rel  # the script writes each of them
