"""Faults, for real: a step process SIGKILLed in the middle of a warehouse write and re-executed from
failure; an unreachable MLflow server under the jobs' retry policy; a corrupted model artifact behind the
serving asset.  Figures (faults tried / survived, rows lost) are in docs/reliability.md.

The kill test runs the real raw and staging assets (small synthetic source, small chunks) plus one
DataFrame asset written by the real IO manager, with the multiprocess executor on a persistent instance,
so every step is its own process; ``ECOM_FAULT_PAUSE`` makes the step that reaches the named write pause
and write its pid to a marker file, and a watcher thread SIGKILLs that pid.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ecom_pipeline.assets import ingest, reviews, spatial
from ecom_pipeline.automation.jobs import JOBS, MODEL_RETRY_POLICY
from ecom_pipeline.config import Settings
from ecom_pipeline.ml.registry import LOAD_ERROR_TAG, Candidate, log_and_register
from ecom_pipeline.resources import (
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
    build_resources,
)
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.warehouse.tables import warehouse_fingerprints
from ecom_pipeline_tests.reliability.fault_points import FAULT_PAUSE_ENV, install

TABLES = ("customers", "sellers", "orders", "order_items")  # what models/delivery_delay reads
FAULT_TABLES = ("orders",)  # the kill test's job: raw + staging orders and the IO-manager asset (3 processes)
ORDERS = 400
CHUNK_ROWS = 100  # several chunks per raw table, so a kill can land between two of them
PROBE_KEY = dg.AssetKey(["features", "fault_probe_orders_per_customer"])
# columns that differ between two loads of the same data (load id and time), left out of content hashes
LOAD_COLUMNS = frozenset({"_load_id", "_loaded_at", "load_id", "loaded_at", "quarantined_at", "staged_at"})
SCHEMAS = ("raw", "staging", "features")


@dg.asset(key=PROBE_KEY, deps=[ingest.staging_key("orders")], pool="duckdb")
def orders_per_customer(warehouse: WarehouseResource) -> pd.DataFrame:
    """A DataFrame asset stored by the project's IO manager (the write the second kill interrupts)."""
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            "SELECT customer_id, count(*)::BIGINT AS orders, min(purchased_at) AS first_order "
            "FROM staging.orders GROUP BY customer_id"
        ).fetchdf()


def _definitions(tables, extra=(), max_concurrent: int = 1) -> dg.Definitions:
    settings = Settings.from_env()
    wanted = {ingest.raw_key(t) for t in tables} | {ingest.staging_key(t) for t in tables}
    assets = [a for a in ingest.build(settings).assets if a.key in wanted]
    resources = build_resources(settings)
    src = resources["source"]
    resources["source"] = SourceResource(
        kind=src.kind,
        data_root=src.data_root,
        synthetic_orders=src.synthetic_orders,
        synthetic_seed=src.synthetic_seed,
        chunk_rows=CHUNK_ROWS,
    )
    job = dg.define_asset_job("faults", selection=dg.AssetSelection.all())
    return dg.Definitions(
        assets=[*assets, *extra],
        jobs=[job],
        resources=resources,
        executor=dg.multiprocess_executor.configured({"max_concurrent": max_concurrent}),
    )


def fault_job():
    """Reconstructable (module level): every multiprocess step re-imports it, with the test's environment,
    and installs the fault points in its own process."""
    install()
    return _definitions(FAULT_TABLES, [orders_per_customer]).resolve_job_def("faults")


def _fingerprints(path: Path, schemas=SCHEMAS) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return warehouse_fingerprints(con, schemas, exclude_columns=LOAD_COLUMNS)
    finally:
        con.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small synthetic source and a reference warehouse from one clean run of every table used here."""
    root = tmp_path_factory.mktemp("faults")
    saved = dict(os.environ)
    for var in (
        "ECOM_WAREHOUSE",
        "MLFLOW_TRACKING_URI",
        "ECOM_PSEUDONYM_KEY",
        "ECOM_DATA_DIR",
        "ECOM_MAPPING",
        "ECOM_ENV",
        FAULT_PAUSE_ENV,
    ):
        os.environ.pop(var, None)
    os.environ.update(
        {
            "ECOM_DATA_ROOT": str(root / "data"),
            "ECOM_DATA_SOURCE": "synthetic",
            "ECOM_SYNTHETIC_ORDERS": str(ORDERS),
            "ECOM_WAREHOUSE": str(root / "reference.duckdb"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        }
    )
    (root / "data").mkdir()
    try:
        defs = _definitions(TABLES, [orders_per_customer])
        assert defs.resolve_job_def("faults").execute_in_process().success
        yield root
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ------------------------------------------------------------------------ (a) kill mid-write, re-execute


class Killer:
    """SIGKILLs the process that paused at the fault point (its pid is in the marker file), ``kills`` times:
    after each kill but the last the marker is removed, so the step's next attempt pauses (and dies) again."""

    def __init__(self, marker: Path, kills: int = 1):
        self.marker, self.kills, self.killed = marker, kills, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and len(self.killed) < self.kills:
            if self.marker.exists() and self.marker.read_text().strip():
                time.sleep(0.2)  # the step is inside its pause: what it wrote so far is on disk
                pid = int(self.marker.read_text())
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
                if len(self.killed) < self.kills:
                    self.marker.unlink()
            time.sleep(0.05)


def _run_with_kill(instance, point: str, marker: Path, reexecute_from: str | None = None, kills: int = 1):
    os.environ[FAULT_PAUSE_ENV] = f"{point}={marker}"
    killer = Killer(marker, kills)
    try:
        options = dg.ReexecutionOptions.from_failure(reexecute_from, instance) if reexecute_from else None
        result = dg.execute_job(
            dg.reconstructable(fault_job),
            instance=instance,
            reexecution_options=options,
            raise_on_error=False,
        )
    finally:
        os.environ.pop(FAULT_PAUSE_ENV, None)
    killer.thread.join(timeout=5)
    return result, killer.killed


def _failed_steps(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}


def _load_log_consistent(path: Path, tables) -> list[str]:
    """Problems with meta.load_log: each raw and staging table has exactly one entry for the load now in it,
    with its row counts."""
    problems = []
    con = duckdb.connect(str(path), read_only=True)
    try:
        for t in tables:
            load_id, raw_rows = con.execute(f"SELECT max(_load_id), count(*) FROM raw.{t}").fetchall()[0]
            staged = con.execute(f"SELECT count(*) FROM staging.{t}").fetchall()[0][0]
            quarantined = con.execute(
                "SELECT count(*) FROM staging.quarantine WHERE table_name = ? AND load_id = ?", [t, load_id]
            ).fetchall()[0][0]
            for layer, expected in (("raw", (raw_rows, 0)), ("staging", (staged, quarantined))):
                entries = con.execute(
                    "SELECT rows, quarantined FROM meta.load_log WHERE layer = ? AND table_name = ? "
                    "AND load_id = ?",
                    [layer, t, load_id],
                ).fetchall()
                if entries != [expected]:
                    problems.append(f"{layer}.{t} load {load_id}: log {entries}, table {expected}")
    finally:
        con.close()
    return problems


@pytest.mark.slow
def test_step_killed_mid_write_then_reexecuted_from_failure_leaves_the_warehouse_consistent(env, tmp_path):
    reference = _fingerprints(env / "reference.duckdb")
    # The faulted warehouse starts as a copy of the reference: the killed writes replace existing tables,
    # the case where a non-atomic write would leave a half-written or emptied table behind.
    warehouse = tmp_path / "faulted.duckdb"
    shutil.copy(env / "reference.duckdb", warehouse)
    os.environ["ECOM_WAREHOUSE"] = str(warehouse)
    faults_tried = faults_survived = 0
    probe = f"features.{PROBE_KEY.path[-1]}"
    (tmp_path / "dagster_home").mkdir()
    try:  # a persistent (sqlite) instance: re-execution reads the failed run's record from it
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
            # 1. kill the raw loader after its first chunk went into the side table, in every attempt: the
            #    raw assets' own retry policy re-runs a killed step, so the run fails only when all
            #    attempts die
            raw_retries = next(
                a for a in ingest.build().assets if a.key == ingest.raw_key("orders")
            ).op.retry_policy.max_retries
            kills = 1 + raw_retries
            run1, killed1 = _run_with_kill(instance, "raw_load.orders", tmp_path / "kill1", kills=kills)
            faults_tried += len(killed1)
            assert len(set(killed1)) == kills and not run1.success
            assert _failed_steps(run1) == {"raw__orders"}
            restarts = [e for e in run1.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
            assert len(restarts) == raw_retries
            con = duckdb.connect(str(warehouse), read_only=True)
            side_rows = con.execute('SELECT count(*) FROM raw."orders__loading"').fetchall()[0][0]
            con.close()
            assert (
                0 < side_rows < reference["raw.orders"][0]
            )  # killed in the middle: part of the load had been written
            state = _fingerprints(warehouse)
            assert state["raw.orders"] == reference["raw.orders"]  # the previous complete table is untouched

            # 2. re-execute from failure; this time kill the IO manager inside its table write
            run2, killed2 = _run_with_kill(
                instance, f"io_write.{probe}", tmp_path / "kill2", reexecute_from=run1.run_id
            )
            faults_tried += len(killed2)
            assert len(killed2) == 1 and not run2.success
            assert _failed_steps(run2) == {"features__fault_probe_orders_per_customer"}
            assert _fingerprints(warehouse)[probe] == reference[probe]  # previous rows, not an empty table

            # 3. re-execute from failure again: completes
            run3 = dg.execute_job(
                dg.reconstructable(fault_job),
                instance=instance,
                raise_on_error=False,
                reexecution_options=dg.ReexecutionOptions.from_failure(run2.run_id, instance),
            )
            assert run3.success
    finally:
        os.environ["ECOM_WAREHOUSE"] = str(env / "reference.duckdb")

    final = _fingerprints(warehouse)
    leftovers = [t for t in final if "__" in t]
    assert leftovers == []  # no side or temp table left behind
    mismatched = {t: (final.get(t), fp) for t, fp in reference.items() if final.get(t) != fp}
    assert mismatched == {}  # same rows and content hash as the clean run: nothing lost, nothing doubled
    assert _load_log_consistent(warehouse, FAULT_TABLES) == []
    faults_survived = (
        faults_tried  # every kill left a consistent warehouse, and the re-executions completed it
    )
    rows_lost = sum(fp[0] for fp in reference.values()) - sum(final[t][0] for t in reference)
    print(
        f"\nfaults tried {faults_tried}, survived {faults_survived}, rows lost {rows_lost}, "
        f"side-table rows at kill {side_rows}"
    )
    assert rows_lost == 0


# -------------------------------------------------------------------------------- (b) MLflow unreachable


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _small_model():
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    return LinearRegression().fit(x, [1.0, 2.0, 3.0]), x


def _delivery_job(warehouse: Path, tracking_uri: str, retry_policy: dg.RetryPolicy | None):
    resources = build_resources(Settings.from_env())
    resources["mlflow"] = MLflowResource(tracking_uri=tracking_uri)
    asset = next(a for a in spatial.build().assets if dg.AssetKey(["models", "delivery_delay"]) in a.keys)
    resources["warehouse"] = WarehouseResource(path=str(warehouse))
    resources["io_manager"] = WarehouseIOManager(database=str(warehouse))
    job = dg.define_asset_job("training_probe", selection=[asset.key], op_retry_policy=retry_policy)
    return dg.Definitions(assets=[asset], jobs=[job], resources=resources).resolve_job_def("training_probe")


@pytest.mark.slow  # delivery_delay trains before it reaches MLflow, and the retries train again
def test_mlflow_unreachable_fails_clearly_is_retried_and_registers_nothing(env, tmp_path, monkeypatch):
    warehouse = tmp_path / "training.duckdb"
    shutil.copy(env / "reference.duckdb", warehouse)
    # a champion registered through a working store first
    store = MLflowResource(tracking_uri=f"sqlite:///{env / 'mlflow.db'}")
    model, x = _small_model()
    with store.start_run("champion"):
        log_and_register(
            Candidate("ecom.delivery.delay", "sklearn", model, x, "mae", 2.0, higher_is_better=False),
            key=_key(),
        )
    client = store.client()
    before_versions = {v.version for v in client.search_model_versions("name = 'ecom.delivery.delay'")}
    before_champion = client.get_model_version_by_alias("ecom.delivery.delay", "champion").version
    before_tables = _fingerprints(warehouse, (*SCHEMAS, "models", "ml"))

    # the real jobs carry the retry policy; the test uses it with a short delay
    for job in JOBS:
        if job.name in ("training", "scoring", "full_pipeline"):
            assert job.op_retry_policy == MODEL_RETRY_POLICY
    fast = dg.RetryPolicy(
        max_retries=MODEL_RETRY_POLICY.max_retries,
        delay=0.2,
        backoff=MODEL_RETRY_POLICY.backoff,
        jitter=MODEL_RETRY_POLICY.jitter,
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("ECOM_MLFLOW_CONNECT_TIMEOUT_S", "2")
    uri = _closed_port_uri()
    with threadpool_limits(1):  # OpenMP threads on a shared 2-core machine spin instead of helping
        result = _delivery_job(warehouse, uri, fast).execute_in_process(raise_on_error=False)

    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == MODEL_RETRY_POLICY.max_retries
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    error = failure.step_failure_data.error.cause  # the user error under Dagster's step wrapper
    assert error.cls_name == "MlflowUnavailableError"
    assert uri in error.message and "MLFLOW_TRACKING_URI" in error.message and "re-execute" in error.message
    assert error.cause is None  # no chained HTTP-library stack: the message is the whole story

    # nothing registered or written half way: same versions, same champion, same warehouse tables
    assert {
        v.version for v in client.search_model_versions("name = 'ecom.delivery.delay'")
    } == before_versions
    assert client.get_model_version_by_alias("ecom.delivery.delay", "champion").version == before_champion
    after_tables = _fingerprints(warehouse, (*SCHEMAS, "models", "ml"))
    assert after_tables == before_tables and "models.delivery_delay" not in after_tables


# ------------------------------------------------------------------------------- (c) corrupted artifact


def test_corrupted_champion_artifact_keeps_serving_the_previous_champion(env, tmp_path):
    """review_sentiment (the serving asset that loads a champion) on a champion whose model file is
    truncated."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from ecom_pipeline_tests.ml.test_registry import (  # sklearn: not in the step processes' imports
        corrupt,
        model_file,
    )
    from ecom_pipeline_tests.reliability.review_serving import review_serving_warehouse

    rng = np.random.default_rng(0)
    n, dim = 60, 8
    warehouse = tmp_path / "serving.duckdb"
    emb = review_serving_warehouse(warehouse, rng, n, dim)
    name = reviews.MODEL_NAME.format(setting="3class")

    tracking = MLflowResource(tracking_uri=f"sqlite:///{env / 'mlflow.db'}", experiment="serving_faults")
    y = rng.integers(0, 3, n)
    good = LogisticRegression(max_iter=200).fit(emb, y)
    newer = LogisticRegression(max_iter=200, C=0.01).fit(emb, (y + 1) % 3)
    with tracking.start_run("v1"):
        v1 = log_and_register(Candidate(name, "sklearn", good, emb[:2], "macro_f1", 0.5), key=_key())
    with tracking.start_run("v2"):
        v2 = log_and_register(Candidate(name, "sklearn", newer, emb[:2], "macro_f1", 0.6), key=_key())
    assert v2.promoted
    corrupt(model_file(name, v2.version))

    result = dg.materialize(
        [reviews.review_sentiment],
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "mlflow": tracking,
            "paths": PathsResource(data_root=str(tmp_path)),
        },
    )
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    message = meta["message"].value
    assert f"v{v2.version} does not load" in message and f"serving former champion v{v1.version}" in message
    con = duckdb.connect(str(warehouse), read_only=True)
    served = con.execute(f"SELECT DISTINCT model_version FROM {reviews.SENTIMENT_TABLE}").fetchall()
    p_positive = con.execute(f"SELECT p_positive FROM {reviews.SENTIMENT_TABLE} ORDER BY review_id").fetchdf()
    con.close()
    assert served == [(f"v{v1.version} on test-enc",)]
    order = np.arange(n)  # the ids are zero-padded: sorted order = generated order
    assert np.allclose(p_positive["p_positive"].to_numpy(), good.predict_proba(emb[order])[:, 2])
    client = mlflow.MlflowClient(tracking.tracking_uri)
    assert "signature mismatch" in client.get_model_version(name, v2.version).tags[LOAD_ERROR_TAG]
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(v2.version)


# ---------------------------------------------------------------------- the IO manager's write, directly

IO_WRITE = """
import sys
import dagster as dg, pandas as pd
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline_tests.reliability.fault_points import install
install()

@dg.asset(key=["features", "t"])
def t() -> pd.DataFrame:
    return pd.DataFrame({"a": range(int(sys.argv[2]))})

dg.materialize([t], resources={"io_manager": WarehouseIOManager(database=sys.argv[1])})
"""


def test_io_manager_write_killed_keeps_the_previous_rows(tmp_path, monkeypatch):
    """The stock dagster-duckdb handler auto-commits its DELETE before the INSERT: the same kill left 0
    rows."""
    path = tmp_path / "w.duckdb"
    cwd = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-c", IO_WRITE, str(path), "1000"], check=True, cwd=cwd, capture_output=True
    )
    marker = tmp_path / "paused"
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"io_write.features.t={marker}")
    killer = Killer(marker)
    child = subprocess.run(
        [sys.executable, "-c", IO_WRITE, str(path), "2000"], cwd=cwd, capture_output=True, check=False
    )
    killer.thread.join(timeout=5)
    assert len(killer.killed) == 1 and child.returncode == -signal.SIGKILL
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM features.t").fetchall() == [(1000,)]
    con.close()


def test_io_manager_replaces_partitions_and_matches_columns_by_name(tmp_path):
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(key=["features", "p"], partitions_def=parts, metadata={"partition_expr": "part"})
    def p(context: dg.AssetExecutionContext) -> pd.DataFrame:
        n = 3 if context.partition_key == "a" else 2
        frame = pd.DataFrame({"part": [context.partition_key] * n, "value": range(n)})
        return frame[["value", "part"]] if context.partition_key == "b" else frame  # column order differs

    io = {"io_manager": WarehouseIOManager(database=str(tmp_path / "w.duckdb"))}
    for key in ("a", "b", "a"):  # "a" twice: replaced, not appended
        assert dg.materialize([p], partition_key=key, resources=io).success
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    rows = con.execute("SELECT part, count(*), sum(value) FROM features.p GROUP BY 1 ORDER BY 1").fetchall()
    con.close()
    assert rows == [("a", 3, 3), ("b", 2, 1)]


def test_io_manager_empty_frame_creates_a_typed_empty_table(tmp_path):
    @dg.asset(key=["features", "e"])
    def e() -> pd.DataFrame:
        return pd.DataFrame({"id": pd.Series([], dtype=object), "n": pd.Series([], dtype="int64")})

    io = {"io_manager": WarehouseIOManager(database=str(tmp_path / "w.duckdb"))}
    assert dg.materialize([e], resources=io).success
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    types = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'e' ORDER BY 1"
    ).fetchall()
    con.close()
    assert types == [("id", "VARCHAR"), ("n", "BIGINT")]


def _key() -> bytes:
    """The model signing key of the current settings, read at call time (some tests change it)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    return signing_key(Settings.from_env())
