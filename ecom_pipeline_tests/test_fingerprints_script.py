"""``benchmarks/fingerprints.py`` (the behaviour check across commits): its fingerprinting of a real warehouse
and its comparison, on small hand-made builds (the full builds are what the script itself runs)."""

from __future__ import annotations

import importlib.util

import duckdb

from ecom_pipeline.config import REPO_ROOT


def _script():
    spec = importlib.util.spec_from_file_location(
        "fingerprints", REPO_ROOT / "benchmarks" / "fingerprints.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _warehouse(path, status: str, loaded_at: str):
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw; CREATE SCHEMA staging; CREATE SCHEMA ml")
    con.execute(
        f"CREATE TABLE raw.orders AS SELECT 'o1' order_id, '{status}' status, '{loaded_at}' _loaded_at"
    )
    con.execute("CREATE TABLE staging.orders AS SELECT 'o1' order_id")
    con.execute(
        "CREATE TABLE ml.model_metrics AS SELECT now() run_ts, 'm' model, 't' task, 'd' dataset, "
        "'s' split, 'mae' metric, 1.5 AS value, 'naive' baseline, 2.0 baseline_value, 'r1' mlflow_run_id, "
        "NULL::DOUBLE ci_low, NULL::DOUBLE ci_high, NULL::BIGINT n_units, NULL::BOOLEAN significant"
    )
    con.close()


def test_per_run_columns_do_not_count_and_a_changed_value_does(tmp_path):
    fp = _script()
    for name, status, at in (
        ("a", "delivered", "2026-01-01"),
        ("b", "delivered", "2026-02-02"),
        ("c", "canceled", "2026-01-01"),
    ):
        _warehouse(tmp_path / f"{name}.duckdb", status, at)
    a, b, c = (fp.fingerprint_warehouse(tmp_path / f"{n}.duckdb") for n in "abc")
    assert set(a["tables"]) == {"raw.orders", "staging.orders"}
    assert a["tables"] == b["tables"]  # only the load time differs
    assert a["tables"]["raw.orders"] != c["tables"]["raw.orders"]
    assert a["model_metrics"] == [
        {
            "model": "m",
            "task": "t",
            "dataset": "d",
            "split": "s",
            "metric": "mae",
            "baseline": "naive",
            "value": 1.5,
            "baseline_value": 2.0,
            "ci_low": None,
            "ci_high": None,
            "n_units": None,
            "significant": None,
        }
    ]

    meta = {
        "source": "synthetic",
        "orders": 10,
        "commit": "x",
        "demo_rc": 0,
        "wall_s": 1.0,
        "load_before": [0, 0, 0],
        "load_after": [0, 0, 0],
    }
    lines, equal = fp.compare(meta | a, meta | b)
    assert equal and "fingerprints equal: 2; different: 0" in "\n".join(lines)
    c["tables"]["raw.extra"] = {"rows": 1, "hash": "1"}
    c["model_metrics"][0]["value"] = 1.6
    lines, equal = fp.compare(meta | a, meta | c)
    text = "\n".join(lines)
    assert not equal and "tables only after: `raw.extra`" in text
    assert "`raw.orders`: 1 vs 1 rows; shared columns with other values: status" in text
    assert "| m | t | s | mae | 1.5 | 1.6 |" in text
    assert "| no interval |" in text


def test_a_moved_metric_is_judged_against_its_interval():
    """A metric that moved by less than half its model-vs-baseline interval is inside the sampling spread; one
    that moved by more is not, and a flipped significance flag is counted."""
    fp = _script()
    before = {"value": 0.70, "ci_low": -0.02, "ci_high": 0.06, "significant": False}
    assert fp._within_interval(before, before | {"value": 0.73}) is True
    assert fp._within_interval(before, before | {"value": 0.75}) is False
    assert fp._within_interval(before, before | {"ci_low": None}) is None
    key = {"model": "m", "task": "t", "dataset": "d", "split": "s", "metric": "f1", "baseline": "b"}
    meta = {"source": "synthetic", "commit": "x", "demo_rc": 0, "wall_s": 1.0, "load_before": [0, 0, 0]}
    a = meta | {"load_after": [0, 0, 0], "tables": {}, "model_metrics": [key | before]}
    b = a | {"model_metrics": [key | before | {"value": 0.80, "ci_low": 0.01, "significant": True}]}
    text = "\n".join(fp.compare(a, b)[0])
    assert "of the 1 different rows: 0 moved by less than half their interval" in text
    assert "the significance flag changed in 1" in text
    assert "| m | t | s | f1 | 0.7 | 0.8 |" in text and "| no | False → True |" in text
