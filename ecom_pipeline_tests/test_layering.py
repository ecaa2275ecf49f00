"""The layering contract of docs/architecture.md, checked by reading every module's imports (AST).

Framework-free layers (``ml``, ``sources``, ``cleaning``, ``warehouse``, ``canonical``) never import Dagster,
``resources``, ``assets`` or ``automation``; ``resources`` never imports ``assets``/``automation``; ``assets``
and ``automation`` do not import each other.  Imports inside functions count too: a lazy import still ties
the layers together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ecom_pipeline

PACKAGE = Path(ecom_pipeline.__file__).resolve().parent

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "ml": (
        "dagster",
        "dagster_duckdb",
        "dagster_duckdb_pandas",
        "ecom_pipeline.resources",
        "ecom_pipeline.assets",
        "ecom_pipeline.automation",
        "ecom_pipeline.definitions",
    ),
    "sources": (
        "dagster",
        "ecom_pipeline.resources",
        "ecom_pipeline.assets",
        "ecom_pipeline.automation",
        "ecom_pipeline.definitions",
    ),
    "cleaning": (
        "dagster",
        "ecom_pipeline.resources",
        "ecom_pipeline.assets",
        "ecom_pipeline.automation",
        "ecom_pipeline.definitions",
    ),
    "warehouse": (
        "dagster",
        "ecom_pipeline.resources",
        "ecom_pipeline.assets",
        "ecom_pipeline.automation",
        "ecom_pipeline.definitions",
        "ecom_pipeline.ml",
    ),
    "canonical": ("dagster", "ecom_pipeline.resources", "ecom_pipeline.assets", "ecom_pipeline.automation"),
    "incremental": (
        "dagster",
        "ecom_pipeline.resources",
        "ecom_pipeline.assets",
        "ecom_pipeline.automation",
        "ecom_pipeline.definitions",
    ),
    "resources": ("ecom_pipeline.assets", "ecom_pipeline.automation", "ecom_pipeline.definitions"),
    "assets": ("ecom_pipeline.automation", "ecom_pipeline.definitions"),
    "automation": ("ecom_pipeline.assets", "ecom_pipeline.definitions"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(layer: str) -> list[str]:
    root = PACKAGE / layer
    files = sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{layer}.py"]
    bad = []
    for path in files:
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    assert _violations(layer) == []


def test_contract_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The scan itself works: the import ml/encoders/store.py had before the warehouse package existed is
    reported."""
    fake = tmp_path / "ecom_pipeline"
    (fake / "ml").mkdir(parents=True)
    (fake / "ml" / "store.py").write_text(
        "def f():\n    from ecom_pipeline.resources.tables import table_exists\n", encoding="utf-8"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    assert _violations("ml") == ["ecom_pipeline/ml/store.py:2 imports ecom_pipeline.resources.tables"]


def test_ml_reads_no_configuration():
    """``ml/`` takes configuration from its caller (signing key, models_dir, device, sizes): no module in it
    imports ``ecom_pipeline.config``."""
    readers = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted((PACKAGE / "ml").rglob("*.py"))
        for line, module in _imports(path)
        if module == "ecom_pipeline.config"
    ]
    assert readers == []
