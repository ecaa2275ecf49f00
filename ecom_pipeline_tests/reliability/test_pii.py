"""PII scan after a full run of the whole graph on data seeded with known personal data.

The synthetic source is wrapped so that known names, e-mails, phones (several formats) and CPF numbers
(with and without punctuation) are planted in customers and review texts, on top of what the generator
already plants (every customer's name/e-mail/phone; ~3 % of review texts with an e-mail, phone, CPF or
URL).  After ``full_pipeline``: the scanner finds them in ``raw`` (so it can find them) and nowhere else,
neither in any other schema nor in the MLflow store, its artifacts or the report files.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ecom_pipeline.config import REPO_ROOT, Settings
from ecom_pipeline.paths import DataPaths
from ecom_pipeline.pii_scan import (
    Finding,
    mask_example,
    scan_files,
    scan_warehouse,
    seeded_needles,
    summarise,
)
from ecom_pipeline.sources import make_source
from ecom_pipeline.sources.base import Source

# Values chosen to be rare, so a hit is the planted value and not an ordinary word.
SEEDED_CUSTOMERS = [  # (name, email, phone) written over the first customers
    ("Zuleide Quintanilha Barbosa", "zuleide.quintanilha@exemplo.com.br", "+55 21 98765-4321"),
    ("Heraclito Vasconcellos", "Heraclito.V77@Mailinator.com", "(31) 99123-4567"),
]
SEEDED_REVIEW_SENTENCES = [  # appended to the first review texts
    " Meu CPF é 529.982.247-25, me liguem no (31) 99123-4567.",
    " cpf 11144477735 e email zuleide.quintanilha@exemplo.com.br",
    " Whatsapp 11987001234 ou +55 21 98765-4321.",
    " Order under CPF 390.533.447-05, mail me: HERACLITO.V77@MAILINATOR.COM",
]
SEEDED_CPFS = ["529.982.247-25", "11144477735", "390.533.447-05"]
N_ORDERS = 500
# warehouse/tables.py only counts raw rows (load_counts: raw = staged + quarantined), never reads a value.
RAW_READERS = {
    "loading.py",
    "cleaning/staging.py",
    "cleaning/staging_upsert.py",
    "quality.py",
    "demo.py",
    "assets/ingest.py",
    "warehouse/tables.py",
}


class SeededSource(Source):
    """The synthetic source with known PII written into customers and review texts."""

    name = "synthetic+seeded"

    def __init__(self, inner: Source):
        self.inner = inner

    def tables(self):
        return self.inner.tables()

    def parse_hints(self, table):
        return self.inner.parse_hints(table)

    def describe(self):
        return {**self.inner.describe(), "seeded": True}

    def read(self, table, chunk_rows=100_000):
        for i, chunk in enumerate(self.inner.read(table, chunk_rows)):
            if i == 0 and table == "customers":
                for row, (name, email, phone) in enumerate(SEEDED_CUSTOMERS):
                    chunk.loc[chunk.index[row], ["name", "email", "phone"]] = [name, email, phone]
            if i == 0 and table == "reviews":
                with_text = chunk.index[chunk["text"].notna()][: len(SEEDED_REVIEW_SENTENCES)]
                chunk.loc[with_text, "text"] = chunk.loc[with_text, "text"] + pd.Series(
                    SEEDED_REVIEW_SENTENCES[: len(with_text)], index=with_text
                )
            yield chunk


def _source_customers(data_root: Path) -> pd.DataFrame:
    src = make_source("synthetic", image_dir=DataPaths(data_root).synthetic_images, synthetic_orders=N_ORDERS)
    return pd.concat(list(src.read("customers")), ignore_index=True)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One full_pipeline run on the seeded source, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("pii") / "data"
    root.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("ECOM_DATA_ROOT", str(root))
    for var in (
        "ECOM_WAREHOUSE",
        "MLFLOW_TRACKING_URI",
        "ECOM_PSEUDONYM_KEY",
        "ECOM_DATA_DIR",
        "ECOM_MAPPING",
        "ECOM_ENV",
    ):
        mp.delenv(var, raising=False)
    mp.setenv("ECOM_DATA_SOURCE", "synthetic")
    mp.setenv("ECOM_SYNTHETIC_ORDERS", str(N_ORDERS))
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.resources.source import SourceResource

    original_build = SourceResource.build
    mp.setattr(SourceResource, "build", lambda self: SeededSource(original_build(self)))
    try:
        settings = Settings.from_env()
        result = (
            build_definitions(settings)
            .resolve_job_def("full_pipeline")
            .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        )
    finally:
        mp.undo()
    customers = _source_customers(root)
    # every raw customer id; names/e-mails/phones of the planted customers and of 60 generated ones
    # (all of them would only make the scan slower, not stronger: they are treated identically)
    sample = customers.head(60)
    needles = seeded_needles(
        names=[c[0] for c in SEEDED_CUSTOMERS] + sample["name"].tolist(),
        emails=[c[1] for c in SEEDED_CUSTOMERS] + sample["email"].tolist(),
        phones=[c[2] for c in SEEDED_CUSTOMERS] + ["11987001234"] + sample["phone"].dropna().tolist(),
        cpfs=SEEDED_CPFS,
        ids=customers["customer_id"].tolist(),
    )
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        findings, scanned = scan_warehouse(con, needles)
        tables = con.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables GROUP BY 1 ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    file_roots = [root / "mlartifacts", root / "reports", root / "mlflow.db"]
    file_findings, files = scan_files(file_roots, needles)
    return dict(
        result=result,
        findings=findings,
        scanned=scanned,
        tables=dict(tables),
        needles=needles,
        file_findings=file_findings,
        files=files,
        root=root,
    )


@pytest.mark.slow
def test_full_run_succeeds_and_scan_covers_every_schema(full_run):
    result = full_run["result"]
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failed
    schemas = {w.split(".")[0] for w in full_run["scanned"]}
    assert {"raw", "staging", "features", "serving", "reports", "ml"} <= schemas
    assert "reports.regional_demand_dp.region" in full_run["scanned"]
    assert len(full_run["files"]) > 10  # MLflow artifacts, the tracking db and the reports were read
    print(
        f"\nscanned {len(full_run['scanned'])} columns in {sum(full_run['tables'].values())} tables "
        f"{full_run['tables']}, {len(full_run['files'])} files, {len(full_run['needles'])} needles; "
        f"hits per schema: {summarise(full_run['findings'])}"
    )


@pytest.mark.slow
def test_raw_holds_every_kind_of_seeded_value(full_run):
    """Proves the scanner finds what was planted (otherwise the zero below would mean nothing)."""
    raw = [f for f in full_run["findings"] if f.where.startswith("raw.")]
    kinds = {f.kind for f in raw}
    assert {"seeded:name", "seeded:email", "seeded:phone", "seeded:cpf", "seeded:customer_id"} <= kinds
    assert {"pattern:email", "pattern:cpf", "pattern:br_phone"} <= kinds
    assert any(f.where == "raw.reviews.text" and f.kind == "seeded:cpf" for f in raw)


@pytest.mark.slow
def test_no_pii_outside_raw(full_run):
    leaks = [f for f in full_run["findings"] if not f.where.startswith("raw.")]
    assert leaks == [], leaks[:10]


@pytest.mark.slow
def test_no_pii_in_mlflow_store_artifacts_or_reports(full_run):
    assert full_run["file_findings"] == [], full_run["file_findings"][:10]


# ---------------------------------------------------------------------------------------------- fast
def test_scanner_finds_planted_values_in_every_column_type_and_masks_examples():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA s")
    con.execute("""CREATE TABLE s.t AS SELECT
        'Contato: JOAO.silva@x.com.br' AS txt, 52998224725::BIGINT AS cpf_int,
        ['a', '(11) 91234-5678'] AS lst, {'who': 'Zuleide Quintanilha'} AS st, 1.5::DOUBLE AS x,
        'id 0123456789abcdef' AS ids""")
    con.execute("CREATE TABLE s.clean AS SELECT '[EMAIL] [CPF] [PHONE]' AS txt, 'deadbeefdeadbeef00' AS h")
    needles = seeded_needles(
        names=["Zuleide Quintanilha"],
        emails=["joao.silva@x.com.br"],
        phones=["+55 11 91234-5678"],
        cpfs=["529.982.247-25"],
        ids=["0123456789abcdef"],
    )
    findings, scanned = scan_warehouse(con, needles)
    assert "s.t.x" not in scanned and "s.t.cpf_int" in scanned
    got = {(f.where, f.kind) for f in findings}
    assert got >= {
        ("s.t.txt", "seeded:email"),
        ("s.t.cpf_int", "seeded:cpf"),
        ("s.t.lst", "seeded:phone"),
        ("s.t.st", "seeded:name"),
        ("s.t.ids", "seeded:customer_id"),
        ("s.t.txt", "pattern:email"),
        ("s.t.lst", "pattern:br_phone"),
    }
    assert not [f for f in findings if f.where.startswith("s.clean")]  # masker placeholders are not PII
    assert all("silva@x" not in f.example for f in findings)
    assert mask_example("joao.silva@x.com") == "jo************om"


def test_needles_cover_phone_and_cpf_formats():
    n = seeded_needles(phones=["+55 (11) 91234-5678"], cpfs=["52998224725"])
    for variant in (
        "(11) 91234-5678",
        "11912345678",
        "11 91234-5678",
        "+5511912345678",
        "529.982.247-25",
        "529982247-25",
        "52998224725",
    ):
        assert variant in n, variant


def test_file_scan_finds_seeded_bytes_and_patterns(tmp_path):
    (tmp_path / "a.json").write_text('{"user": "ZULEIDE QUINTANILHA", "mail": "x.y@z.com"}')
    (tmp_path / "b.pkl").write_bytes(b"\x80\x04\x10" + b"0123456789abcdef" + b"\x00")
    (tmp_path / "c.csv").write_text("region,orders\nSP,10\n")
    found, files = scan_files(
        [tmp_path], seeded_needles(names=["Zuleide Quintanilha"], ids=["0123456789abcdef"])
    )
    assert len(files) == 3
    assert {(Path(f.where).name, f.kind) for f in found} == {
        ("a.json", "seeded:name"),
        ("a.json", "pattern:email"),
        ("b.pkl", "seeded:customer_id"),
    }
    assert isinstance(found[0], Finding)


def test_only_ingestion_code_reads_the_restricted_raw_schema():
    """`raw` holds personal data as delivered: only the loader, staging, checks and the demo summary
    read it, and no export path does.  A new reader must be added here on purpose."""
    package = REPO_ROOT / "ecom_pipeline"
    # SQL naming the schema: raw."t", raw.{t}, FROM raw.t, the RAW_SCHEMA constant or a raw_schema parameter
    pattern = re.compile(
        r"""\braw\.(?:"|\{)|\b(?:FROM|JOIN)\s+raw\.|RAW_SCHEMA|\braw_schema\b""", re.IGNORECASE
    )
    readers = {str(p.relative_to(package)) for p in package.rglob("*.py") if pattern.search(p.read_text())}
    assert readers <= RAW_READERS, readers - RAW_READERS
    assert {"loading.py", "cleaning/staging.py"} <= readers  # the pattern does see real readers
    # the warehouse layer may name raw only to count its rows
    counting = re.findall(
        r"SELECT\s+(.{0,20}?)\s+FROM\s+raw\.", (package / "warehouse/tables.py").read_text(), re.I
    )
    assert counting and all(c.lower() == "count(*)" for c in counting), counting
