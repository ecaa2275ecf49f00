"""A big delivered file is streamed with bounded memory: peak RSS of a process doing the raw load.

A reviews CSV of the requested size is generated (untimed, outside the measured process), then a fresh
child process loads it through the ``mapped`` source into ``raw.reviews`` of a new DuckDB file, exactly as
the ``ingest`` job's raw step does (``loading.load_raw_table``).  The child reports its resident memory
after the imports and the DuckDB connection (the baseline) and its peak (``VmHWM``); the growth is
what streaming the file cost.  Memory is bounded by two settings, not by the file: the chunk size (the
Python side holds one chunk) and DuckDB's ``memory_limit`` (its buffer pool keeps written pages cached up
to that limit, 80 % of RAM by default).  Cases: 20 MB and 200 MB with small chunks and a 16 MB DuckDB limit
(growth must not scale with the file), and 200 MB with the pipeline's defaults.

    python benchmarks/hostile_input.py                              # the three cases
    python benchmarks/hostile_input.py --mb 50 --no-save            # one case

Results: ``benchmarks/results/hostile_input.json`` and ``hostile_input.md``.  The reliability test
``test_hostile_input.py::test_big_file_is_streamed_with_bounded_memory`` runs the same child on a smaller
file.  Timings on the shared 2-core machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CHUNK_ROWS = 100_000
SMALL_CHUNK_ROWS = 10_000
SMALL_MEMORY_LIMIT = "16MB"
# (MB, chunk rows, DuckDB memory_limit, fast path): the fast path (DuckDB reads the file) is the loader's
# default; the last case forces the Python reader, whose cost is one chunk of Python objects.
CASES = (
    (20, SMALL_CHUNK_ROWS, SMALL_MEMORY_LIMIT, True),
    (200, SMALL_CHUNK_ROWS, SMALL_MEMORY_LIMIT, True),
    (200, CHUNK_ROWS, "", True),
    (200, SMALL_CHUNK_ROWS, SMALL_MEMORY_LIMIT, False),
)
HEADER = "review_id,order_id,score,title,text,created_at\n"
MAPPING = {
    "tables": {
        "reviews": {
            "file": "reviews.csv",
            "columns": {
                "review_id": "review_id",
                "order_id": "order_id",
                "score": "score",
                "title": "title",
                "text": "text",
                "created_at": "created_at",
            },
        }
    }
}


def write_big_csv(path: Path, target_bytes: int) -> int:
    """A reviews CSV of at least ``target_bytes`` (quoted texts with commas, accents, emoji); returns rows."""
    words = [
        "ótimo",
        "produto",
        "chegou",
        "rápido",
        "recomendo",
        "qualidade",
        "entrega",
        "péssimo",
        "👍",
        "bom",
    ]
    block_rows = 10_000
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER)
        written = len(HEADER)
        while written < target_bytes:
            lines = []
            for i in range(rows, rows + block_rows):
                text = " ".join(words[(i * 7 + k) % len(words)] for k in range(12 + i % 20))
                lines.append(
                    f'r{i},o{i},{1 + i % 5},"Título, {i % 97}","{text}, fim",'
                    f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00\n"
                )
            block = "".join(lines)
            fh.write(block)
            written += len(block.encode("utf-8"))
            rows += block_rows
    return rows


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc.  Not ``ru_maxrss``: Linux carries the
    parent's high-water mark into a child across fork/exec, so a child of a big process (pytest with torch
    loaded) would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(folder: Path, chunk_rows: int, memory_limit: str = "", fast_path: bool = True) -> dict:
    """Runs in the measured process: raw load of ``folder/reviews.csv``; prints nothing, returns figures."""
    import duckdb
    import yaml

    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.sources.mapped import MappedSource

    (folder / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    source = MappedSource.from_yaml(folder / "mapping.yaml")
    con = duckdb.connect(str(folder / "warehouse.duckdb"))
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])
    # Baseline = ready to load: the libraries a first chunk imports lazily (pyarrow through DuckDB's
    # pandas scan) are loaded first, so the growth is what the file costs, not the first import.
    import pandas as pd

    con.register("_warm", pd.DataFrame({"a": ["x"]}))
    con.execute("SELECT * FROM _warm").fetchall()
    con.unregister("_warm")
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    result = load_raw_table(con, source, "reviews", load_id="big", chunk_rows=chunk_rows, fast_path=fast_path)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")  # the load's peak, before the verification below
    # The count of distinct ids is the test's check, not part of the load: under the tiny limit DuckDB 2.x
    # cannot spill a hash aggregate of 96 MB of text ids, so lift the limit for it.
    con.execute("SET memory_limit = '1GB'")
    loaded = con.execute(
        "SELECT count(*), count(DISTINCT review_id), max(length(text)) FROM raw.reviews"
    ).fetchall()[0]
    con.close()
    return {
        "rows": result.rows,
        "raw_count": loaded[0],
        "distinct_ids": loaded[1],
        "max_text_chars": loaded[2],
        "seconds": round(seconds, 1),
        "rows_per_second": round(result.rows / seconds),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "chunk_rows": chunk_rows,
        "duckdb_memory_limit": memory_limit or "default (80% of RAM)",
        # which reader loaded the rows: DuckDB (fast path) or the Python reader, and why a file fell back
        "fast_path": fast_path,
        "fast_rows": result.fast_rows,
        "python_rows": result.rows - result.fast_rows,
        "fast_fallbacks": result.fast_fallbacks,
    }


def measure(
    target_mb: float,
    chunk_rows: int = CHUNK_ROWS,
    memory_limit: str = "",
    workdir: Path | None = None,
    fast_path: bool = True,
) -> dict:
    """Generate the file, run :func:`child` in a fresh process, return its figures plus the file's."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        rows = write_big_csv(folder / "reviews.csv", int(target_mb * 1024 * 1024))
        file_mb = (folder / "reviews.csv").stat().st_size / 1024 / 1024
        gen_seconds = time.perf_counter() - t0
        proc = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                str(folder),
                "--chunk-rows",
                str(chunk_rows),
                "--memory-limit",
                memory_limit,
                *([] if fast_path else ["--python-reader"]),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(
        {
            "file_mb": round(file_mb, 1),
            "file_rows": rows,
            "generate_seconds": round(gen_seconds, 1),
            "growth_share_of_file": round(out["rss_growth_mb"] / file_mb, 3),
        }
    )
    return out


def _reader(r: dict) -> str:
    if r["python_rows"] == 0:
        return "DuckDB (fast path)"
    if r["fast_rows"] == 0:
        return "Python" + (" (fast path fell back)" if r["fast_path"] else "")
    return f"DuckDB + Python for {r['python_rows']:,} rows"


def _markdown(results: list[dict], commit: str, load: str) -> str:
    lines = [
        "# Hostile input: a big file streamed with bounded memory",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; shared 2-core machine, timings "
        "are upper bounds. Generated by `benchmarks/hostile_input.py` (raw load of a reviews CSV through the "
        "`mapped` source in a fresh process).",
        "",
        f"Commit {commit}; load average before the run: {load}.",
        "",
        "| file | rows | reader | chunk rows | DuckDB memory_limit | raw load | rows/s | RSS baseline | "
        "peak RSS | growth | growth / file size | raw rows = file rows |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['file_mb']:,.0f} MB | {r['rows']:,} | {_reader(r)} | {r['chunk_rows']:,} | "
            f"{r['duckdb_memory_limit']} | "
            f"{r['seconds']:.0f} s | {r['rows_per_second']:,} | {r['baseline_rss_mb']:,.0f} MB | "
            f"{r['peak_rss_mb']:,.0f} MB | {r['rss_growth_mb']:,.0f} MB | {r['growth_share_of_file']:.2f} | "
            f"{r['raw_count'] == r['file_rows'] == r['distinct_ids']} |"
        )
    lines += [
        "",
        "Growth is set by DuckDB's memory_limit (and, for the Python reader, the chunk size), not by the "
        "file: compare the 20 MB and 200 MB rows with the same settings. With the defaults (no DuckDB limit) "
        "the growth is larger, and is mostly DuckDB caching the pages it wrote.",
        "",
        "DuckDB 1.5 allocates read_csv's buffer (32 MiB per scanning thread by default) inside its buffer "
        "pool: under a 16 MB limit that allocation failed, every file fell back to the Python reader "
        "(about 65-80 MB of growth for 10k-row chunks of these texts, over the test's bound), and the "
        "fallback was only visible in the load's `fast_fallbacks`. The fast path now sizes the buffer and "
        "the scan's threads to the connection's memory_limit (`sources.fast_csv.csv_scan_settings`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, help="one case of this size (default: the three CASES)")
    ap.add_argument("--chunk-rows", type=int, default=SMALL_CHUNK_ROWS)
    ap.add_argument(
        "--memory-limit", default=SMALL_MEMORY_LIMIT, help="DuckDB memory_limit; '' for DuckDB's default"
    )
    ap.add_argument("--python-reader", action="store_true", help="force the Python reader (no fast path)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.chunk_rows, args.memory_limit, not args.python_reader)))
        return
    cases = [(args.mb, args.chunk_rows, args.memory_limit, not args.python_reader)] if args.mb else CASES
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    results = []
    for mb, chunk_rows, limit, fast_path in cases:
        results.append(measure(mb, chunk_rows, limit, fast_path=fast_path))
        results[-1].update({"commit": commit, "load_before": " ".join(load)})
        print(json.dumps(results[-1]), flush=True)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "hostile_input.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "hostile_input.md").write_text(_markdown(results, commit, " ".join(load)))


if __name__ == "__main__":
    main()
