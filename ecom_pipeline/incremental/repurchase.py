"""serving.repurchase_scores, refreshed daily from the served model of the weekly training.

The weekly training step (asset ``models/repurchase_model``) trains, evaluates and gates the repurchase
model and keeps the *served* model (GBM or the RFM baseline, whichever the gate chose) in the models folder in
the safe format of :mod:`ecom_pipeline.ml.safe_artifacts`, signed, with what it is (:func:`save_served`).
The daily scoring step (asset ``serving/repurchase_scores``) loads it after checking the signature and scores
customers from ``serving.user_profiles`` (which the daily run refreshes incrementally):

* in full on the first run, when the served model changes (a retrain: its version and training time are the
  signature; so at least weekly), after ``full_refresh_days`` or with ``refresh: full``;
* otherwise the customers with staging changes since the last scoring, **and everyone when the profiles'
  as-of moved**: recency and tenure are features of every customer and both are measured from the as-of, so
  a new day changes every customer's inputs.  A daily run in which the data grew by a day therefore rescores
  every customer (one ``predict_proba`` over the profiles, no training, no profile rebuild from staging), and
  equals a full recomputation; only a run in which the as-of did not move (a late correction of an older
  day) rescores just the changed customers.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from ecom_pipeline.incremental.changes import FULL_REFRESH_DAYS, RefreshPlan, plan_refresh, read_state
from ecom_pipeline.incremental.profiles import TARGET as PROFILES
from ecom_pipeline.incremental.serving import MergeCounts, Part, write_customer_rows
from ecom_pipeline.warehouse.tables import table_exists

TARGET = "serving.repurchase_scores"
SERVED_FOLDER = "repurchase_served"  # under the models folder (paths resource)
COLUMNS = [
    "customer_id",
    "as_of",
    "horizon_days",
    "probability",
    "model",
    "model_version",
    "recency_days",
    "frequency",
    "monetary",
]


@dataclass
class ServedRepurchase:
    """The model the serving gate chose, with what labels its rows; ``model`` None: nothing was trained."""

    model: object
    served: str
    version: str
    horizon_days: int
    trained_at: str

    @property
    def signature(self) -> str:
        return (
            f"repurchase:{self.served}@{self.version or '-'}/h={self.horizon_days}/trained={self.trained_at}"
        )

    def score(self, profiles: pd.DataFrame) -> pd.DataFrame:
        if self.model is None or profiles.empty:
            return pd.DataFrame(columns=COLUMNS)
        return profiles.assign(
            horizon_days=self.horizon_days,
            probability=self.model.predict_proba(profiles),
            model=self.served,
            model_version=self.version,
        )[COLUMNS]


def save_served(folder: Path, served: ServedRepurchase, key: bytes) -> None:
    """Write the served model (its fitted scikit-learn estimator, skops) and a signed description, replacing
    the previous one in one rename."""
    from ecom_pipeline.ml.safe_artifacts import save_model, sign_directory

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    payload = tmp / "payload"  # what the signature covers (the signature file sits beside it)
    payload.mkdir(parents=True)
    info = {
        "served": served.served,
        "version": served.version,
        "horizon_days": served.horizon_days,
        "trained_at": served.trained_at,
        "features": getattr(served.model, "features", None),
    }
    if served.model is not None:
        save_model(served.model.model, "sklearn", payload / "model")
    (payload / "served.json").write_text(json.dumps(info))
    (tmp / "signature").write_text(sign_directory(payload, key))
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_served(folder: Path, key: bytes) -> ServedRepurchase | None:
    """The served model written by :func:`save_served`, after its files verified against the signature
    (``ModelIntegrityError`` otherwise); None when training has not written one yet."""
    from ecom_pipeline.ml.safe_artifacts import load_model_dir, verify_directory
    from ecom_pipeline.ml.users.repurchase import RepurchaseGBM, RFMBaseline

    payload = Path(folder) / "payload"
    if not (payload / "served.json").is_file():
        return None
    sig_file = Path(folder) / "signature"
    signature = sig_file.read_text().strip() if sig_file.is_file() else None
    verify_directory(payload, signature, key, f"served repurchase model in {folder}")
    info = json.loads((payload / "served.json").read_text())
    model = None
    if (payload / "model").is_dir():
        wrapper = RFMBaseline() if info["served"] == RFMBaseline.name else RepurchaseGBM()
        wrapper.model = load_model_dir(payload / "model")
        if info.get("features") is not None:
            wrapper.features = list(info["features"])
        model = wrapper
    return ServedRepurchase(
        model, info["served"], info["version"], int(info["horizon_days"]), info["trained_at"]
    )


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RepurchaseRefresh:
    plan: RefreshPlan
    counts: MergeCounts
    scope: str  # whom it scored, and why


def _profiles(con: duckdb.DuckDBPyConnection, customers: list[str] | None) -> pd.DataFrame:
    if not table_exists(con, PROFILES):
        return pd.DataFrame()
    if customers is None:
        return con.execute(f"SELECT * FROM {PROFILES} ORDER BY customer_id").fetchdf()
    con.register("_scored", pd.DataFrame({"customer_id": pd.Series(customers, dtype="string")}))
    try:
        return con.execute(
            f"SELECT * FROM {PROFILES} WHERE customer_id IN (SELECT customer_id FROM _scored) "
            "ORDER BY customer_id"
        ).fetchdf()
    finally:
        con.unregister("_scored")


def _as_of(con: duckdb.DuckDBPyConnection, table: str):
    """The as-of ``table``'s rows were computed at (one value per table), None without the table."""
    if not table_exists(con, table):
        return None
    if table == TARGET:
        return con.execute(f"SELECT max(as_of) FROM {TARGET}").fetchall()[0][0]
    return con.execute(f"SELECT max(as_of) FROM {PROFILES}").fetchall()[0][0]


def refresh_repurchase_scores(
    con: duckdb.DuckDBPyConnection,
    served: ServedRepurchase,
    *,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RepurchaseRefresh:
    """Plan, score (everyone, or the customers whose profile inputs changed) and write the scores with the
    refresh state in one transaction."""
    inputs = read_state(con, PROFILES) or {}
    plan = plan_refresh(
        con,
        TARGET,
        signature=served.signature,
        mode=mode,
        full_refresh_days=full_refresh_days,
        now=now,
        input_target=PROFILES,
        input_watermark=inputs.get("watermark"),
    )
    moved = None if plan.full else (_as_of(con, TARGET), _as_of(con, PROFILES))
    everyone = plan.full or (moved[0] != moved[1])
    if plan.full:
        scope = f"all customers ({plan.reason})"
    elif everyone:
        scope = (
            f"all customers: the profiles' as-of moved ({moved[0]} → {moved[1]}), so every recency changed"
        )
    else:
        scope = f"{len(plan.customers):,} customers with new activity (as-of unchanged)"
    rows = served.score(_profiles(con, None if everyone else plan.customers))
    if everyone and not plan.full:
        plan.customers = rows["customer_id"].astype(str).tolist()
        parts = [Part("", None)]
    else:
        parts = None
    counts = write_customer_rows(con, plan, served.signature, rows, parts=parts, now=now)
    return RepurchaseRefresh(plan, counts, scope)
