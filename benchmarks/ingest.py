"""Ingest + clean throughput vs a bare DuckDB ``read_csv`` + insert of the same files, and peak memory.

Cases (each in its own fresh process so peak RSS is that case's alone):

* ``olist``: the real Olist sample (``../shared/datasets/olist``, gz CSVs) through ``OlistSource``.
* ``synthetic_<n>``: the synthetic shop with n orders.  The generator has no files, so the rows it
  produced are dumped to CSV (untimed) and then read back two ways: by the pipeline through the
  ``mapped`` source (an identity mapping) and by bare DuckDB.  The generator run itself is timed too.

For every case and path: rows, seconds, rows/s; the ratio pipeline / bare DuckDB; the staging step alone
(raw table already in DuckDB → validated staging) vs the bare load; peak RSS and the chunk size.

    python benchmarks/ingest.py                      # olist, synthetic 100k and 1M
    python benchmarks/ingest.py --cases olist synthetic_100000
    python benchmarks/ingest.py --cases olist synthetic_100000 --out ingest_fast_path_100k
    python benchmarks/ingest.py --cases synthetic_100000 --csv-cache /tmp/ingest_csv --repeats 1

``--csv-cache DIR``: keep the synthetic CSVs in ``DIR/<case>`` and reuse them on the next run (generating
1M orders takes minutes); the generator is then not timed again.

Results: ``benchmarks/results/ingest.json`` and ``ingest.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OLIST = REPO.parent / "shared" / "datasets" / "olist"
CHUNK_ROWS = 100_000
REPEATS = 3  # interleaved raw-only repetitions (medians)
OLIST_FILES = {
    "customers": "olist_customers_dataset",
    "sellers": "olist_sellers_dataset",
    "products": "olist_products_dataset",
    "orders": "olist_orders_dataset",
    "order_items": "olist_order_items_dataset",
    "payments": "olist_order_payments_dataset",
    "reviews": "olist_order_reviews_dataset",
    "geolocation": "olist_geolocation_dataset",
    "translation": "product_category_name_translation",
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pipeline(con, source, key: bytes, fast_path: bool = True) -> dict:
    """raw load + staging of every canonical table; returns rows and seconds per step, the quarantine by
    table and reason, and raw/staging fingerprints (to show the fast path and the Python reader agree)."""
    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.cleaning.staging import stage_table
    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, warehouse_fingerprints

    raw_rows = raw_s = stage_s = 0.0
    quarantined = 0
    fast_rows = python_rows = 0
    fallbacks: dict = {}
    for table in TABLE_ORDER:
        r = load_raw_table(con, source, table, load_id="bench", chunk_rows=CHUNK_ROWS, fast_path=fast_path)
        raw_rows += r.rows
        raw_s += r.seconds
        fast_rows += r.fast_rows
        python_rows += r.python_rows
        fallbacks.update(r.fast_fallbacks)
    for table in TABLE_ORDER:
        t0 = time.perf_counter()
        s = stage_table(con, table, hints=source.parse_hints(table), pseudonym_key=key)
        stage_s += time.perf_counter() - t0
        quarantined += s.quarantined_rows
    reasons = {
        f"{t}:{r}": n
        for t, r, n in con.execute(
            "SELECT table_name, reason, count(*) FROM staging.quarantine GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    }
    prints = warehouse_fingerprints(con, ("raw", "staging"), PER_RUN_COLUMNS)
    return {
        "rows": int(raw_rows),
        "raw_seconds": raw_s,
        "staging_seconds": stage_s,
        "seconds": raw_s + stage_s,
        "quarantined": quarantined,
        "quarantine_reasons": reasons,
        "fast_rows": fast_rows,
        "python_rows": python_rows,
        "fast_fallbacks": fallbacks,
        "fingerprints": {k: list(v) for k, v in prints.items()},
    }


def _schema_storage_mb(con, schema: str) -> float:
    """MiB of the blocks holding ``schema``'s tables (after a checkpoint): ECOM_RAW_COMPRESSION's price."""
    con.execute("CHECKPOINT")
    tables = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = ? AND table_type = 'BASE TABLE'",
        [schema],
    ).fetchall()
    block = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
    blocks = 0
    for (t,) in tables:
        blocks += con.execute(
            "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0",
            [f"{schema}.{t}"],
        ).fetchall()[0][0]
    return blocks * block / 2**20


def _bare_duckdb(con, files: list[Path]) -> dict:
    """The yardstick: DuckDB's own CSV reader straight into tables, nothing else."""
    rows = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        con.execute(
            f"CREATE OR REPLACE TABLE bare_{i} AS SELECT * FROM read_csv(?, header=true, all_varchar=true)",
            [str(f)],
        )
        rows += con.execute(f"SELECT count(*) FROM bare_{i}").fetchone()[0]
    return {"rows": int(rows), "seconds": time.perf_counter() - t0}


ALL_WAYS = ("bare_duckdb", "fast_path", "python_reader")


def _raw_only_interleaved(
    tmp: Path, source, files: list[Path], repeats: int = REPEATS, ways: tuple[str, ...] = ALL_WAYS
) -> dict:
    """Raw load only (files -> DuckDB tables), the ways one after another, ``repeats`` times, medians: on a
    shared machine, interleaving puts the same background load on each way.  ``fast_path_full``: the fast
    path with raw stored with DuckDB's full string compression (ECOM_RAW_COMPRESSION=full)."""
    import statistics

    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.loading import load_raw_table

    times: dict[str, list[float]] = {way: [] for way in ways}
    sizes: dict[str, float] = {}
    for i in range(repeats):
        for way, runs in times.items():
            path = tmp / f"interleaved_{way}_{i}.duckdb"
            con = duckdb.connect(str(path))
            t0 = time.perf_counter()
            if way == "bare_duckdb":
                _bare_duckdb(con, files)
            else:
                for table in TABLE_ORDER:
                    load_raw_table(
                        con,
                        source,
                        table,
                        load_id="bench",
                        chunk_rows=CHUNK_ROWS,
                        fast_path=way != "python_reader",
                        compression="full" if way == "fast_path_full" else None,
                    )
            runs.append(time.perf_counter() - t0)
            con.execute("CHECKPOINT")
            con.close()
            sizes[way] = path.stat().st_size / 2**20
            path.unlink()
    med = {way: statistics.median(v) for way, v in times.items()}
    return {
        "repeats": repeats,
        "seconds": times,
        "median_seconds": med,
        "file_mb": sizes,
        **{f"{way}_vs_bare": med["bare_duckdb"] / med[way] for way in ways if way != "bare_duckdb"},
    }


def _identity_mapping(folder: Path, tables: list[str]) -> Path:
    import yaml

    from ecom_pipeline.canonical import TABLES

    mapping = {
        "version": 1,
        "timezone": "UTC",
        "geo_bounds": "brazil",
        "timestamp_formats": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        "tables": {
            t: {"file": f"{t}.csv", "columns": {c: c for c in TABLES[t].column_names}} for t in tables
        },
    }
    path = folder / "identity.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def _write_synthetic_csvs(n: int, csv_dir: Path, key: bytes) -> dict:
    """Run the synthetic generator through raw + staging (timed) and dump what it delivered to CSV (untimed),
    so every path reads the same files."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER, TABLES
    from ecom_pipeline.sources.synthetic import SyntheticSource

    gen_path = csv_dir.parent / f"{csv_dir.name}_generated.duckdb"
    gen_db = duckdb.connect(str(gen_path))
    source = SyntheticSource(n_orders=n, seed=7, image_dir=None)
    generated = _pipeline(gen_db, source, key)
    csv_dir.mkdir(parents=True, exist_ok=True)
    for t in TABLE_ORDER:
        cols = ", ".join(f'"{c}"' for c in TABLES[t].column_names)
        gen_db.execute(
            f'COPY (SELECT {cols} FROM raw."{t}" ORDER BY _source_row) TO '
            f"'{csv_dir / (t + '.csv')}' (HEADER, DELIMITER ',')"
        )
    gen_db.close()
    gen_path.unlink()
    (csv_dir / "complete").write_text("all tables written\n")  # a half-written cache is not reused
    return generated


def run_case(
    case: str, csv_cache: Path | None = None, repeats: int = REPEATS, raw_ways: tuple[str, ...] = ()
) -> dict:
    """``raw_ways``: only the interleaved raw-only runs of these ways (no pipeline, no staging)."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER

    key = b"benchmark-key"
    out: dict = {"case": case, "chunk_rows": CHUNK_ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if case == "olist":
            from ecom_pipeline.sources.olist import OlistSource

            if not OLIST.exists():
                return {"case": case, "skipped": f"{OLIST} not found"}
            con = duckdb.connect(str(tmp / "pipeline.duckdb"))
            out["pipeline"] = _pipeline(con, OlistSource(OLIST), key)
            con.close()
            files = [next(OLIST.glob(f"{stem}.csv*")) for stem in OLIST_FILES.values()]
            bare = duckdb.connect(str(tmp / "bare.duckdb"))
            out["bare_duckdb"] = _bare_duckdb(bare, files)
            out["bare_duckdb"]["note"] = "all 9 delivered files (geolocation included), as delivered"
            bare.close()
        else:
            from ecom_pipeline.sources.mapped import MappedSource

            n = int(case.split("_")[1])
            csv_dir = (csv_cache / case) if csv_cache else tmp / "csv"
            if (csv_dir / "complete").exists():
                out["csv_reused_from"] = str(csv_dir)
            else:
                out["generator_and_pipeline"] = _write_synthetic_csvs(n, csv_dir, key)
            mapped = MappedSource.from_yaml(_identity_mapping(csv_dir, list(TABLE_ORDER)), data_dir=csv_dir)
            if raw_ways:
                files = [csv_dir / f"{t}.csv" for t in TABLE_ORDER]
                out["raw_ways"] = _raw_only_interleaved(tmp, mapped, files, max(repeats, 1), raw_ways)
                out["peak_rss_mb"] = _peak_rss_mb()
                return out
            con = duckdb.connect(str(tmp / "pipeline.duckdb"))
            out["pipeline"] = _pipeline(con, mapped, key, fast_path=True)
            out["pipeline"]["raw_storage_mb"] = _schema_storage_mb(con, "raw")
            con.close()
            out["pipeline"]["file_mb"] = (tmp / "pipeline.duckdb").stat().st_size / 2**20
            con = duckdb.connect(str(tmp / "python_reader.duckdb"))
            out["python_reader"] = _pipeline(con, mapped, key, fast_path=False)
            con.close()
            f, p = out["pipeline"], out["python_reader"]
            out["same_as_python_reader"] = {
                "raw_and_staging_fingerprints": f.pop("fingerprints") == p.pop("fingerprints"),
                "quarantine_by_reason": f["quarantine_reasons"] == p["quarantine_reasons"],
            }
            bare = duckdb.connect(str(tmp / "bare.duckdb"))
            out["bare_duckdb"] = _bare_duckdb(bare, [csv_dir / f"{t}.csv" for t in TABLE_ORDER])
            bare.execute("CHECKPOINT")
            bare.close()
            out["bare_duckdb"]["file_mb"] = (tmp / "bare.duckdb").stat().st_size / 2**20
            if repeats > 0:  # 0: skip the interleaved raw-only runs (the 1M case takes long enough)
                out["raw_only_interleaved"] = _raw_only_interleaved(
                    tmp, mapped, [csv_dir / f"{t}.csv" for t in TABLE_ORDER], repeats
                )
    p, b = out["pipeline"], out["bare_duckdb"]
    p.pop("fingerprints", None)
    p["rows_per_s"] = p["rows"] / p["seconds"]
    b["rows_per_s"] = b["rows"] / b["seconds"]
    out["ratio_pipeline_vs_bare"] = p["rows_per_s"] / b["rows_per_s"]
    out["ratio_raw_only_vs_bare"] = (p["rows"] / p["raw_seconds"]) / b["rows_per_s"]
    out["ratio_staging_only_vs_bare"] = (p["rows"] / p["staging_seconds"]) / b["rows_per_s"]
    if "python_reader" in out:
        q = out["python_reader"]
        out["ratio_python_reader_vs_bare"] = (q["rows"] / q["seconds"]) / b["rows_per_s"]
        out["ratio_python_reader_raw_only_vs_bare"] = (q["rows"] / q["raw_seconds"]) / b["rows_per_s"]
    if "generator_and_pipeline" in out:
        g = out["generator_and_pipeline"]
        g["rows_per_s"] = g["rows"] / g["seconds"]
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Ingest benchmark",
        "",
        (
            f"{meta['when']} on {meta['machine']} ({meta['cpus']} cores), commit {meta.get('commit', '?')}, "
            f"load average at the end {meta.get('load_average_after', '?')}, chunk size {CHUNK_ROWS:,} rows. "
            "Pipeline = source → raw (text, lineage) → staging (typed, validated, quarantined, "
            "pseudonymised, masked). Bare = DuckDB `read_csv(all_varchar)` → table of the same files. "
            "Each case in a fresh process."
        ),
    ]
    if any("pipeline" in r or "skipped" in r for r in results):
        lines += [
            "",
            (
                "| case | rows | pipeline rows/s | bare DuckDB rows/s | ratio | raw-only ratio | "
                "staging-only ratio | raw s | staging s | quarantined | peak RSS MB |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in results:
        if "raw_ways" in r:
            continue
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} |")
            continue
        p, b = r["pipeline"], r["bare_duckdb"]
        lines.append(
            f"| {r['case']} | {p['rows']:,} | {p['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} | "
            f"{r['ratio_pipeline_vs_bare']:.2f}x | {r['ratio_raw_only_vs_bare']:.2f}x | "
            f"{r['ratio_staging_only_vs_bare']:.2f}x | {p['raw_seconds']:.1f} | "
            f"{p['staging_seconds']:.1f} | {p['quarantined']:,} | {r['peak_rss_mb']:,.0f} |"
        )
    sized = [r for r in results if "raw_storage_mb" in r.get("pipeline", {})]
    if sized:
        lines += [
            "",
            "Storage (ECOM_RAW_COMPRESSION as set for the run, default light): "
            + "; ".join(
                f"{r['case']}: raw tables {r['pipeline']['raw_storage_mb']:,.0f} MiB, pipeline database "
                f"{r['pipeline']['file_mb']:,.0f} MiB, bare database {r['bare_duckdb']['file_mb']:,.0f} MiB"
                for r in sized
            ),
        ]
    compared = [r for r in results if "python_reader" in r]
    if compared:
        lines += [
            "",
            (
                "DuckDB fast path (the pipeline above) vs the Python reader on the same files "
                "(raw = source → raw.<table>; all = raw + staging):"
            ),
            "",
            (
                "| case | fast path raw s | Python reader raw s | fast path all, ratio to bare | Python "
                "reader all, ratio to bare | fast path raw-only ratio | Python reader raw-only ratio | rows "
                "by DuckDB / by the Python reader | quarantined: fast path / Python reader | raw+staging "
                "fingerprints equal | quarantine by reason equal |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|",
        ]
        for r in compared:
            p, q, same = r["pipeline"], r["python_reader"], r["same_as_python_reader"]
            lines.append(
                f"| {r['case']} | {p['raw_seconds']:.1f} | {q['raw_seconds']:.1f} | "
                f"{r['ratio_pipeline_vs_bare']:.2f}x | {r['ratio_python_reader_vs_bare']:.2f}x | "
                f"{r['ratio_raw_only_vs_bare']:.2f}x | {r['ratio_python_reader_raw_only_vs_bare']:.2f}x | "
                f"{p['fast_rows']:,} / {p['python_rows']:,} (whole files through Python: "
                f"{len(p['fast_fallbacks'])}) | {p['quarantined']:,} / {q['quarantined']:,} | "
                f"{same['raw_and_staging_fingerprints']} | "
                f"{same['quarantine_by_reason']} |"
            )
    inter = [r for r in results if "raw_only_interleaved" in r]
    if inter:
        lines += [
            "",
            (
                "Raw load only (files → raw tables), the three ways interleaved, median of "
                f"{inter[0]['raw_only_interleaved']['repeats']} (same background load on each way):"
            ),
            "",
            (
                "| case | bare DuckDB s | fast path s | Python reader s | fast path / bare (speed) | "
                "Python reader / bare (speed) |"
            ),
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in inter:
            m = r["raw_only_interleaved"]
            med = m["median_seconds"]
            lines.append(
                f"| {r['case']} | {med['bare_duckdb']:.1f} | {med['fast_path']:.1f} | "
                f"{med['python_reader']:.1f} | {m['fast_path_vs_bare']:.2f}x | "
                f"{m['python_reader_vs_bare']:.2f}x |"
            )
    for r in (r for r in results if "raw_ways" in r):
        m = r["raw_ways"]
        lines += [
            "",
            f"Raw load only, {r['case']}, the ways interleaved, median of {m['repeats']} "
            "(fast_path_full = the fast path with ECOM_RAW_COMPRESSION=full):",
            "",
            "| way | seconds (median) | runs | speed relative to bare | database file MiB |",
            "|---|---:|---|---:|---:|",
        ]
        for way, sec in m["median_seconds"].items():
            rel = m["median_seconds"]["bare_duckdb"] / sec
            runs = ", ".join(f"{x:.1f}" for x in m["seconds"][way])
            lines.append(f"| {way} | {sec:.1f} | {runs} | {rel:.2f}x | {m['file_mb'][way]:,.0f} |")
    gens = [r for r in results if "generator_and_pipeline" in r]
    if gens:
        lines += [
            "",
            "Synthetic generator → raw → staging (no files): "
            + "; ".join(
                f"{r['case']}: {r['generator_and_pipeline']['rows']:,} rows in "
                f"{r['generator_and_pipeline']['seconds']:.1f} s "
                f"({r['generator_and_pipeline']['rows_per_s']:,.0f} rows/s)"
                for r in gens
            ),
        ]
    lines += [
        "",
        (
            "Target: pipeline ≥ 0.5× bare DuckDB. Olist's bare path reads the geolocation file as delivered "
            "(45,928 rows); the pipeline turns it into regions, so its row count differs."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["olist", "synthetic_100000", "synthetic_1000000"])
    parser.add_argument("--out", default="ingest", help="results name under benchmarks/results/")
    parser.add_argument("--csv-cache", type=Path, help="keep and reuse the synthetic CSVs under this folder")
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help="interleaved raw-only repetitions (0: none)"
    )
    parser.add_argument(
        "--raw-ways",
        nargs="+",
        default=[],
        choices=[*ALL_WAYS, "fast_path_full"],
        help="only the interleaved raw-only runs of these ways (bare_duckdb first), nothing else",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.csv_cache, args.repeats, tuple(args.raw_ways))))
        return 0
    import os

    results = []
    for case in args.cases:
        print(f"[ingest benchmark] {case} ...", flush=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                case,
                "--repeats",
                str(args.repeats),
                *(["--raw-ways", *args.raw_ways] if args.raw_ways else []),
                *(["--csv-cache", str(args.csv_cache)] if args.csv_cache else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            results.append({"case": case, "skipped": f"failed (exit {proc.returncode})"})
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_average_before"] = load_before
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    import os

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, check=False, text=True
    ).stdout.strip()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (RESULTS / f"{args.out}.md").write_text(_markdown(results, meta))
    print((RESULTS / f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
