"""Thin assets: no function in ``ecom_pipeline/assets/`` is longer than 60 lines (decorator excluded).

An asset reads its inputs, calls framework-free functions (``ml/``, ``warehouse/``, ...), records and writes;
work that makes a body longer belongs in one of those functions, where it can be tested without Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

import ecom_pipeline

ASSETS = Path(ecom_pipeline.__file__).resolve().parent / "assets"
MAX_LINES = 60


def long_functions(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    """``file:function (n lines)`` for every function or method under ``root`` longer than ``max_lines``,
    counted from its ``def`` line to its last line."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(f"{path.relative_to(root.parent)}:{node.name} ({lines} lines)")
    return found


def test_no_asset_function_is_longer_than_60_lines():
    assert long_functions(ASSETS) == []


def test_the_length_check_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + 60 lines = 61
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "fat.py").write_text(f"def fat():\n{body}\n\n\ndef thin():\n    return 1\n")
    assert long_functions(tmp_path / "assets") == ["assets/fat.py:fat (61 lines)"]


def _builds_with_unused_settings(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name == "build":
                params = {a.arg for a in node.args.args + node.args.kwonlyargs}
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if "settings" in params and "settings" not in used:
                    bad.append(f"{path.relative_to(root.parent)}:build")
    return bad


def test_build_takes_settings_only_when_it_uses_them():
    """One rule for every contribution to the code location (definitions.py passes settings to a build that
    declares them): a ``build(settings)`` that ignores its argument is refused."""
    package = ASSETS.parent
    assert _builds_with_unused_settings(ASSETS) + _builds_with_unused_settings(package / "automation") == []


def test_every_contribution_loads_into_the_code_location():
    from ecom_pipeline.definitions import build_definitions

    defs = build_definitions()
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"models/recommender_evaluation", "models/sentiment_model", "raw/orders"} <= keys


def test_cpu_gpu_sizing_has_one_spelling():
    """Every asset config sizes CPU and GPU work as ``<name>_cpu`` / ``<name>_cuda`` pairs, which
    ``ComputeResource.sized`` picks from by device; no ``gpu_*`` / ``cpu_*`` spellings."""
    import importlib
    import pkgutil

    import dagster as dg

    import ecom_pipeline.assets
    from ecom_pipeline.resources import ComputeResource

    bad = []
    for info in pkgutil.iter_modules(ecom_pipeline.assets.__path__):
        module = importlib.import_module(f"ecom_pipeline.assets.{info.name}")
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, dg.Config)):
                continue
            fields = set(cls.model_fields)
            for f in fields:
                if f.startswith(("gpu_", "cpu_", "cuda_")) or f.endswith("_gpu"):
                    bad.append(f"{cls.__name__}.{f}: spell it <name>_cpu / <name>_cuda")
                for mine, twin in (("_cpu", "_cuda"), ("_cuda", "_cpu")):
                    if f.endswith(mine) and f.removesuffix(mine) + twin not in fields:
                        bad.append(f"{cls.__name__}.{f} has no {f.removesuffix(mine) + twin}")
    assert bad == []

    class Sizes(dg.Config):
        epochs_cpu: int = 2
        epochs_cuda: int = 20

    compute = ComputeResource(device="cpu")
    assert compute.sized(Sizes(), "epochs", "cpu") == 2
    assert compute.sized(Sizes(), "epochs", "cuda:0") == 20
