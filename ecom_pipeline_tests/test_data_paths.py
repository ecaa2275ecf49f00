"""The ``paths`` resource owns the data root: no asset or automation module joins a folder onto it by hand.

A module that reads ``<something>.data_root`` or writes ``<path> / "models"`` (or another folder of
:class:`ecom_pipeline.paths.DataPaths`) builds a path the resource already names; it would also miss a
changed layout.  Checked by reading the modules (AST), with a probe that the scan catches both spellings."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg

import ecom_pipeline
from ecom_pipeline.config import Settings
from ecom_pipeline.resources import PathsResource, build_resources

PACKAGE = Path(ecom_pipeline.__file__).resolve().parent
CHECKED = ("assets", "automation", "sources")
# the names of the folders and files under the data root (ecom_pipeline/paths.py)
FOLDER_NAMES = {
    "models",
    "reports",
    "inbox",
    "landing",
    "partitions",
    "ops",
    "run_failures.jsonl",
    "snapshot.duckdb",
    "synthetic_images",
}


def hand_built_paths(path: Path) -> list[str]:
    """``file:line what`` for every ``x.data_root`` read and every ``x / "<folder name>"`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "data_root":
            found.append(f"{path.name}:{node.lineno} reads .data_root")
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in FOLDER_NAMES
        ):
            found.append(f"{path.name}:{node.lineno} joins {node.right.value!r}")
    return found


def test_asset_and_automation_modules_take_folders_from_the_paths_resource():
    bad = [
        hit
        for layer in CHECKED
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for hit in hand_built_paths(path)
    ]
    assert bad == []


def test_the_scan_catches_a_hand_built_path(tmp_path):
    module = tmp_path / "fat.py"
    module.write_text(
        "from pathlib import Path\n\n"
        "def plot(source):\n"
        "    return Path(source.data_root) / 'reports' / 'x.png'\n\n"
        "def models(settings):\n"
        "    return settings.root / 'models'\n",
        encoding="utf-8",
    )
    assert sorted(hand_built_paths(module)) == [
        "fat.py:4 joins 'reports'",
        "fat.py:4 reads .data_root",
        "fat.py:7 joins 'models'",
    ]


def test_the_resource_keeps_the_folders_of_before(tmp_path):
    """Same layout as before the resource existed: the folders the assets and sensors used to build."""
    paths = PathsResource(data_root=str(tmp_path))
    assert paths.models == tmp_path / "models"
    assert paths.report("regions.png") == tmp_path / "reports" / "regions.png"
    assert paths.inbox == tmp_path / "inbox"
    assert paths.landing == tmp_path / "landing"
    assert paths.layout.inbox_processed == tmp_path / "inbox" / "processed"
    assert paths.layout.synthetic_images == tmp_path / "synthetic_images"
    assert paths.layout.partition("2024-05-01") == tmp_path / "partitions" / "2024-05-01"
    assert paths.failure_log == tmp_path / "ops" / "run_failures.jsonl"
    assert paths.snapshot == tmp_path / "snapshot.duckdb"
    assert PathsResource(data_root=str(tmp_path), snapshot_path="/elsewhere/s.duckdb").snapshot == Path(
        "/elsewhere/s.duckdb"
    )


def test_the_resource_is_built_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOM_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ECOM_SNAPSHOT", str(tmp_path / "snap.duckdb"))
    paths = build_resources(Settings.from_env())["paths"]
    assert paths.root == (tmp_path / "root").resolve()
    assert paths.snapshot == tmp_path / "snap.duckdb"


def test_an_asset_gets_the_folder_from_the_resource(tmp_path):
    seen = {}

    @dg.asset
    def writes_a_report(paths: PathsResource) -> None:
        seen["report"] = paths.report("r.csv")

    assert dg.materialize(
        [writes_a_report], resources={"paths": PathsResource(data_root=str(tmp_path))}
    ).success
    assert seen["report"] == tmp_path / "reports" / "r.csv"
