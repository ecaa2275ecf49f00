import time

import duckdb
import pytest

from ecom_pipeline.config import Settings
from ecom_pipeline.resources import build_resources
from ecom_pipeline.resources.compute import ComputeResource
from ecom_pipeline.resources.tracking import MLflowResource
from ecom_pipeline.resources.warehouse import LAYER_SCHEMAS, WarehouseResource, connect_with_retry


def test_warehouse_creates_layer_schemas(tmp_path):
    wh = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    with wh.connect() as con:
        con.execute("CREATE TABLE staging.t AS SELECT 1 AS x")
    with wh.connect(read_only=True) as con:
        schemas = {
            r[0] for r in con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
        }
        assert set(LAYER_SCHEMAS) <= schemas
        assert con.execute("SELECT x FROM staging.t").fetchone() == (1,)


def test_schemas_written_with_plain_sql_exist_before_any_step():
    """A table created with plain SQL (not write_table, which creates its schema) lands in a schema every
    write connection creates, or one its module creates: otherwise the step fails when no step that creates
    the schema has run yet, which depends on the executor's order (a launched run at 1M orders:
    lstm_backtest before sarima_backtest)."""
    import re
    from pathlib import Path

    import ecom_pipeline

    writes = re.compile(
        r"(?:CREATE (?:OR REPLACE )?(?:TEMP )?TABLE(?: IF NOT EXISTS)?|INSERT (?:OR REPLACE )?INTO)"
        r"\s+\"?([a-z_]+)\.[a-z_]"
    )
    missing = []
    for path in sorted(Path(ecom_pipeline.__file__).parent.rglob("*.py")):
        text = path.read_text()
        for m in writes.finditer(text):
            schema = m.group(1)
            own = re.search(rf"CREATE SCHEMA IF NOT EXISTS ({schema}\b|\{{)", text)
            if schema not in LAYER_SCHEMAS and not own:
                missing.append(f"{path.name}: {m.group(0)}")
    assert not missing, missing


def test_read_only_open_of_missing_warehouse_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialise"):
        connect_with_retry(tmp_path / "missing.duckdb", read_only=True)


def test_connect_waits_for_lock_held_by_another_process(tmp_path):
    """A second process holding the write lock makes us wait, not fail, until it releases."""
    import subprocess
    import sys

    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); "
            "time.sleep(2); c.close()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    con = connect_with_retry(path, timeout_s=30)
    waited = time.monotonic() - t0
    con.close()
    holder.wait(10)
    assert waited > 0.5  # it really had to wait for the other process


def test_connect_gives_up_after_timeout(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException, match="lock"):
            connect_with_retry(path, timeout_s=0.5)
    finally:
        holder.kill()


def test_mlflow_resource_logs_to_local_sqlite(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = MLflowResource(tracking_uri=uri, experiment="t")
    import mlflow

    with res.start_run("unit") as run:
        mlflow.log_metric("rmse", 1.5)
    got = res.client().get_run(run.info.run_id)
    assert got.data.metrics["rmse"] == 1.5
    assert got.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_compute_resource_resolves_auto_to_an_available_device():
    import torch

    dev = ComputeResource(device="auto").torch_device()
    assert dev == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            ComputeResource(device="cuda").torch_device()


def test_small_models_train_on_one_torch_thread_unless_the_user_sets_threads():
    import os

    import torch

    before = torch.get_num_threads()
    try:
        assert ComputeResource().configure_threads(small_model=True) == 1 == torch.get_num_threads()
        cores = os.cpu_count() or 1
        assert ComputeResource().configure_threads() == cores == torch.get_num_threads()
        assert ComputeResource(threads=3).configure_threads(small_model=True) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_resource_sets_per_environment(data_root, monkeypatch):
    local = build_resources(Settings.from_env())
    assert local["warehouse"].path == str(data_root / "warehouse.duckdb")
    assert local["mlflow"].tracking_uri == f"sqlite:///{data_root / 'mlflow.db'}"
    monkeypatch.setenv("ECOM_ENV", "docker")
    assert build_resources(Settings.from_env())["mlflow"].tracking_uri == "http://mlflow:5000"
    monkeypatch.setenv("ECOM_ENV", "prod")
    with pytest.raises(ValueError, match="ECOM_WAREHOUSE"):
        build_resources(Settings.from_env())
    monkeypatch.setenv("ECOM_ENV", "staging-ish")
    with pytest.raises(ValueError, match="not one of"):
        build_resources(Settings.from_env())


def test_memory_limit_defaults_to_a_share_and_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("ECOM_DUCKDB_MEMORY_LIMIT", raising=False)
    default = duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    wh = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    with wh.connect() as con:  # a share of the machine (config.duckdb_memory_limit), below DuckDB's 80 %
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] != default
    monkeypatch.setenv("ECOM_DUCKDB_MEMORY_LIMIT", "256MB")
    with wh.connect() as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit != default and limit.endswith(("MiB", "MB")) and 200 < float(limit.split()[0]) < 300
    with WarehouseResource(path=str(tmp_path / "w.duckdb"), memory_limit="1GB").connect() as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0].split()[0] in (
            "953.6",
            "1.0",
        )


def test_lock_waits_are_counted(tmp_path):
    """The wait statistics the concurrency report uses grow only when an open really had to wait."""
    import subprocess
    import sys

    from ecom_pipeline.resources.warehouse import lock_wait_stats

    path = tmp_path / "w.duckdb"
    before = lock_wait_stats()
    connect_with_retry(path).close()  # nobody holds it: no wait recorded
    assert lock_wait_stats()["waits"] == before["waits"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); "
            "time.sleep(1.5); c.close()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    connect_with_retry(path, timeout_s=30).close()
    holder.wait(10)
    after = lock_wait_stats()
    assert after["waits"] == before["waits"] + 1 and after["max_s"] > 0.5


def test_dataset_name_does_not_need_the_delivered_files(tmp_path):
    # an inbox deployment archives each delivery: the mapping's files are gone when the training job runs,
    # and the model steps that only name the dataset must not fail on them (they did at 1,000 orders)
    from ecom_pipeline.resources import SourceResource
    from ecom_pipeline.resources.source import SourceBuildFailure

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("tables:\n  orders:\n    file: orders.csv\n    columns: {order_id: id}\n")
    resource = SourceResource(
        kind="mapped", mapping=str(mapping), data_dir=str(tmp_path / "archived"), data_root=str(tmp_path)
    )
    with pytest.raises(SourceBuildFailure):
        resource.build()
    assert resource.dataset_name == "mapped"
    assert SourceResource(kind="Olist", data_root=str(tmp_path)).dataset_name == "olist"


def test_every_step_that_uses_the_compute_resource_sets_its_own_torch_threads():
    """An in-process run executes every step in one process, where torch's thread count is whatever the
    previous step set (one, after a small model): a step that uses the compute resource sets its own count,
    directly or through a helper of its module that does."""
    import ast
    from pathlib import Path

    assets = Path(__file__).resolve().parents[1] / "ecom_pipeline" / "assets"
    missing = []
    for path in sorted(assets.glob("*.py")):
        tree = ast.parse(path.read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        setters = {f.name for f in functions if "configure_threads" in ast.unparse(f)}
        for f in functions:
            uses = [
                a.arg
                for a in f.args.args
                if a.annotation is not None and "ComputeResource" in ast.unparse(a.annotation)
            ]
            if not f.decorator_list or not uses:
                continue
            body = "\n".join(ast.unparse(s) for s in f.body)
            if f"{uses[0]}." not in body and f"{uses[0]}," not in body and f"{uses[0]})" not in body:
                continue  # takes the resource (for its pool tag) but does not use it
            called = {
                c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            }
            if "configure_threads" not in body and not called & setters:
                missing.append(f"{path.name}:{f.name}")
    assert missing == [], missing


def test_a_step_gets_its_share_of_the_cores_for_the_gradient_boosted_trees(monkeypatch):
    import os

    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: F401  (loads scikit-learn's OpenMP)
    from threadpoolctl import threadpool_info

    from ecom_pipeline.config import step_cpu_threads
    from ecom_pipeline.ml.threads import openmp_threads

    cores = os.cpu_count() or 1
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "2")
    assert step_cpu_threads() == max(1, cores // 2)
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "1")
    assert step_cpu_threads() == cores
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "two")
    with pytest.raises(ValueError, match="ECOM_MAX_CONCURRENT"):
        step_cpu_threads()

    def openmp() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"}

    before = openmp()
    assert before, "scikit-learn's OpenMP runtime is loaded"
    with openmp_threads(1):
        assert openmp() == {1}
    assert openmp() == before
