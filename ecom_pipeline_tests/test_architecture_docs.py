"""docs/architecture.md is the users' reference for the canonical tables: it must match canonical.py, and no
user doc may send a reader outside the repository."""

from __future__ import annotations

import re

from ecom_pipeline.canonical import DOC_BEGIN, DOC_END, tables_markdown
from ecom_pipeline_tests.datasets import REPO_ROOT


def test_architecture_doc_tables_match_canonical():
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start, end = doc.index(DOC_BEGIN), doc.index(DOC_END) + len(DOC_END)
    assert doc[start:end] == tables_markdown(), (
        "docs/architecture.md's canonical tables drifted from canonical.py: regenerate the block with "
        "`python -m ecom_pipeline.canonical`"
    )


def test_user_docs_stay_inside_the_repository():
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    outside = re.compile(r"\.\./shared|DESIGN\.md")
    hits = [
        f"{p.relative_to(REPO_ROOT)}:{i}"
        for p in docs
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, f"user docs point outside the repository: {hits}"
