"""Where the real shared datasets live, and a skip marker for tests that need them.

The datasets sit next to the repository (``<repo>/../shared/datasets/<name>``) and are never copied into
it; tests that need one skip with a reason when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT / ".." / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/datasets/<name>`` relative to the repository root (may not exist)."""
    return (SHARED_DATASETS / name).resolve()


OLIST_DIR = shared_dataset("olist")

requires_olist = pytest.mark.skipif(
    not (OLIST_DIR / "olist_orders_dataset.csv.gz").is_file(),
    reason=f"real Olist sample not found at {OLIST_DIR}",
)
