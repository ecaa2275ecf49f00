"""The regions and region-flows computations (``features/regions``, ``features/region_flows``) at a base
revision and now, side by side on the same staging tables: seconds of each and whether the outputs are equal.

Staging is built with the project's own path (source → raw → staging) in a temporary DuckDB for the synthetic
shop at ``--orders`` and the real UK shop (38 countries: region ids carry their country).  The base
revision's ``ml/spatial/geo.py`` is loaded from git (``--base``, default: the commit before the change that
computes order statistics once for the three levels).  Each computation runs ``--repeat`` times;
the best time counts.  Writes benchmarks/results/<--out, default spatial_features>.{json,md} with the commit
and the load average.

    python benchmarks/spatial_features.py [--orders 100000] [--base 0ca7b64] [--out spatial_features]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
UK_DIR = REPO.parent / "shared" / "datasets" / "online_retail_uk"
UK_MAPPING = REPO / "docs" / "examples" / "online_retail_uk.yaml"
TABLES = ("regions", "customers", "sellers", "orders", "order_items")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=True).stdout


def base_geo(rev: str):
    """The base revision's ml/spatial/geo.py as a module (it imports only pandas, numpy and geography)."""
    path = Path(tempfile.mkdtemp(prefix="geo-base-")) / "geo_base.py"
    path.write_text(_git("show", f"{rev}:ecom_pipeline/ml/spatial/geo.py"))
    spec = importlib.util.spec_from_file_location("geo_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def staged_frames(source, countries_of) -> tuple[dict, tuple, bool]:
    """The staging tables of ``source`` located as ``assets.spatial.located_frames`` does."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.cleaning.staging import stage_table
    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.ml.spatial.geo import locate

    with tempfile.TemporaryDirectory(prefix="spatial-bench-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "w.duckdb"))
        for table in TABLE_ORDER:
            load_raw_table(con, source, table, load_id="L1")
            stage_table(con, table, hints=source.parse_hints(table), pseudonym_key=b"k" * 32)
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        f = {t: con.execute(f"SELECT * FROM staging.{t}").fetchdf() for t in TABLES if t in present}
        con.close()
    from ecom_pipeline.canonical import TABLES as CANONICAL

    for t in TABLES:
        f.setdefault(t, pd.DataFrame(columns=CANONICAL[t].column_names))
    countries = countries_of(f)
    f["customers"] = locate(f["customers"], countries)
    f["sellers"] = locate(f["sellers"], countries)
    qualify = len(set(f["customers"]["country"].dropna()) | set(f["sellers"]["country"].dropna())) > 1
    return f, countries, qualify


def _data_countries(f: dict) -> tuple[str, ...]:
    """The shop's countries from its customers, most first (as SourceResource.shop_countries)."""
    from ecom_pipeline.geography import country_code

    codes = f["customers"]["country"].dropna().map(country_code).dropna()
    return tuple(codes.value_counts().index)


def regions_now(geo, f, qualify):
    orders = geo.order_stats(f["orders"], f["order_items"])
    return [
        geo.region_table(lv, f["regions"], f["customers"], f["sellers"], orders, qualify) for lv in geo.LEVELS
    ]


def regions_base(geo, f, qualify):
    if hasattr(geo, "order_stats"):  # a base with the order statistics computed once (e1bd097 and later)
        return regions_now(geo, f, qualify)
    return [
        geo.region_table(
            lv, f["regions"], f["customers"], f["sellers"], f["orders"], f["order_items"], qualify
        )
        for lv in geo.LEVELS
    ]


def flows_any(geo, f, countries, qualify):
    g = geo.order_geo(f["orders"], f["order_items"], f["customers"], f["sellers"], countries)
    return [geo.flows(g, lv, qualify) for lv in geo.LEVELS]


def _equal(a: list, b: list) -> bool | str:
    """True when every level's frame is equal (values within 1e-9), else why not; a column whose values are
    equal but whose dtype changed is named."""
    dtypes = []
    for x, y in zip(a, b, strict=True):
        x, y = x.reset_index(drop=True), y.reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9, check_dtype=False)
        except AssertionError as exc:
            return f"values differ: {str(exc).splitlines()[0]}"
        dtypes += [f"{c}: {x[c].dtype} -> {y[c].dtype}" for c in x.columns if x[c].dtype != y[c].dtype]
    return True if not dtypes else "values equal; dtype " + ", ".join(sorted(set(dtypes)))


def _best(fn, repeat: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(name: str, f, countries, qualify, old, repeat: int) -> dict:
    from ecom_pipeline.ml.spatial import geo as new

    row = {"shop": name, "orders": len(f["orders"]), "order_lines": len(f["order_items"]), "qualify": qualify}
    for what, before, now in (
        ("regions", lambda: regions_base(old, f, qualify), lambda: regions_now(new, f, qualify)),
        (
            "region_flows",
            lambda: flows_any(old, f, countries, qualify),
            lambda: flows_any(new, f, countries, qualify),
        ),
    ):
        b_s, b_out = _best(before, repeat)
        n_s, n_out = _best(now, repeat)
        row[what] = {
            "base_s": round(b_s, 3),
            "now_s": round(n_s, 3),
            "ratio": round(n_s / b_s, 3),
            "rows": sum(len(x) for x in n_out),
            "equal": _equal(b_out, n_out),
        }
        print(name, what, row[what], flush=True)
    return row


def main() -> None:
    from ecom_pipeline.sources.synthetic import SyntheticSource

    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--base", default="0ca7b64")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="spatial_features", help="results name under benchmarks/results/")
    args = ap.parse_args()
    old = base_geo(args.base)
    res = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD").strip(),
        "base": args.base,
        "load_average_at_start": os.getloadavg(),
        "shops": [],
    }
    synthetic = SyntheticSource(n_orders=args.orders, seed=42, image_dir=None)
    f, countries, qualify = staged_frames(synthetic, lambda f: ("BR",))
    res["shops"].append(measure(f"synthetic_{args.orders}", f, countries, qualify, old, args.repeat))
    if (UK_DIR / "online_retail_2010_2011.parquet").is_file():
        from ecom_pipeline.sources.mapped import MappedSource

        uk = MappedSource.from_yaml(UK_MAPPING, data_dir=UK_DIR)
        f, countries, qualify = staged_frames(uk, _data_countries)
        res["shops"].append(measure("online_retail_uk", f, countries, qualify, old, args.repeat))
    else:
        print(f"UK shop not found at {UK_DIR}: skipped", file=sys.stderr)
    res["load_average_at_end"] = os.getloadavg()
    md = [
        "# Regions and region flows: base revision vs now",
        "",
        f"commit {res['commit']} vs base {res['base']}, {res['date']}, 2 cores, load "
        f"{res['load_average_at_start'][0]:.2f} at start / {res['load_average_at_end'][0]:.2f} at end; best "
        f"of {args.repeat} runs each; staging built by the project's own path, customers and sellers "
        "located once (outside the timings).",
        "",
        "| shop | orders | order lines | computation | base s | now s | now / base | output rows "
        "| outputs equal |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for s in res["shops"]:
        for what in ("regions", "region_flows"):
            r = s[what]
            md.append(
                f"| {s['shop']} | {s['orders']:,} | {s['order_lines']:,} | {what} | {r['base_s']} "
                f"| {r['now_s']} | **{r['ratio']:.2f}x** | {r['rows']:,} | {r['equal']} |"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=1))
    (RESULTS / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
