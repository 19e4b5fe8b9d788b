"""The project's design lives in the project: every document a code comment
or the README points to exists, with the section named, and nothing points
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("uffdtrace", "bpf", "scripts", "tests") for p in (ROOT / d).rglob("*")
           if p.suffix in {".py", ".c", ".h", ".sh"} and p.name != "test_docs.py"]
DOC_REF = re.compile(r"(docs/[\w/.-]+\.md)(?:, \"([^\"]+)\")?")


def headings(doc: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", doc.read_text(), re.M)}


def test_no_source_cites_a_file_outside_the_repository() -> None:
    for path in SOURCES:
        text = path.read_text(errors="replace")
        assert "DESIGN.md" not in text and "DESIGN §" not in text and "../shared" not in text, path


def test_every_document_and_section_cited_exists() -> None:
    cited = 0
    for path in [*SOURCES, ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for m in DOC_REF.finditer(path.read_text(errors="replace")):
            doc = ROOT / m.group(1)
            assert doc.is_file(), f"{path.name} cites {m.group(1)}"
            if m.group(2):
                assert any(h.startswith(m.group(2)) for h in headings(doc)), f"{path.name}: {m.group(0)}"
            cited += 1
    assert cited >= 10
