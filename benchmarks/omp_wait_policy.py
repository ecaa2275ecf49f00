"""OpenMP wait policy for launched step processes: torch's threads spinning vs sleeping while they wait.

A launched run (the UI, schedules, sensors) executes two steps at once on the 2-core box.  The torch steps
that keep every core (the review fine-tune, the encoders) then share the cores with a sibling step; GNU
OpenMP's threads spin while they wait for each other, so a thread whose partner lost its core burns the
other one.  At 1M orders the fine-tune took 581 s launched and 119 s in process for the same training.

Each case runs in a fresh process (the policy is read when torch loads OpenMP), alone and beside a busy
sibling (``benchmarks/step_threads.py``'s: DuckDB aggregates on all cores):

* ``default``: every core, OpenMP's default policy (spin, then sleep);
* ``one thread``: one torch thread;
* ``passive``: every core, ``OMP_WAIT_POLICY=PASSIVE`` (a waiting thread sleeps at once);
* ``spin 10k``, ``spin 1k``: every core, ``GOMP_SPINCOUNT`` (libgomp spins 300,000 times by default before
  a waiting thread sleeps).

Work: the review fine-tune (``ml.text.finetune.finetune_classifier``: 640 review-like texts, 2 epochs, no
budget, so every case does the same training) and the packaged text encoder on 256 review-like texts and on
256 passages as long as product texts.

    python benchmarks/omp_wait_policy.py      # results: benchmarks/results/omp_wait_policy.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from step_threads import beside, review_like_texts, run_meta  # noqa: E402 - after the path above

CASES = {  # name -> (torch threads, extra environment)
    "default": (0, {}),
    "one thread": (1, {}),
    "passive": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    # libgomp's default spins 300,000 times before it sleeps; fewer spins: a middle way
    "spin 10k": (0, {"GOMP_SPINCOUNT": "10000"}),
    "spin 1k": (0, {"GOMP_SPINCOUNT": "1000"}),
}


def _work(threads: int) -> dict:
    """One case, in this fresh process: fine-tune and encode; wall and CPU seconds of each."""
    import numpy as np
    import torch

    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, finetune_classifier

    torch.set_num_threads(threads or os.cpu_count() or 1)
    texts = review_like_texts(640)
    y = np.array([("great" in t) + ("poor" in t) for t in texts]) % 3
    enc = load_text_encoder(
        "multilingual-e5-small", models_dir=REPO / "data" / "models", max_length=128, backend="torch"
    )
    enc.encode(texts[:32])  # load and warm up outside the timing
    out = {"torch_threads": torch.get_num_threads()}
    t0, c0 = time.perf_counter(), time.process_time()
    settings = FinetuneSettings(epochs=2, budget_clock="none", patience=5, tune_class_bias=False)
    finetune_classifier(enc, texts, y, 3, settings=settings)
    out["finetune_s"], out["finetune_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    enc.encode(texts[:256])
    out["encode_s"], out["encode_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    # product passages: category, title and description, cut at the encoder's 128 tokens
    long_texts = [" ".join([t, t, t]) for t in texts[:256]]
    t0 = time.perf_counter()
    enc.encode(long_texts, kind="passage")
    out["encode_long_s"] = time.perf_counter() - t0
    return out


def _case(name: str) -> dict:
    threads, extra = CASES[name]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | extra
    done = subprocess.run(
        [sys.executable, __file__, "--case", name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="omp_wait_policy")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(_work(CASES[args.case][0])), flush=True)
        return 0
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for case in ("alone", "busy sibling"):
        with beside(case):
            for name in CASES:
                rows.append({"beside": case, "case": name, **_case(name)})
                print(json.dumps(rows[-1]), flush=True)
    meta = run_meta(load_before)
    commit = meta["commit"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# OpenMP wait policy: torch beside a busy sibling step",
        "",
        (
            f"{meta['when']}, commit {commit}, {meta['cores']} cores, load average before {load_before}, "
            f"after {meta['load_average_after']} (the run's own sibling included). Each case in a fresh "
            "process; fine-tune = `finetune_classifier` on 640 texts, 2 epochs (the same training in every "
            "case); encoder = e5-small (torch) on 256 review-like texts and on 256 passages three times as "
            "long (cut at 128 tokens, as product texts); speed relative to `default` beside the same "
            "neighbour."
        ),
        "",
        "| beside | case | torch threads | fine-tune s | fine-tune CPU s | fine-tune speed | encoder s | "
        "encoder speed | long texts s | long texts speed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = next(x for x in rows if x["beside"] == r["beside"] and x["case"] == "default")
        lines.append(
            f"| {r['beside']} | {r['case']} | {r['torch_threads']} | {r['finetune_s']:.1f} | "
            f"{r['finetune_cpu_s']:.1f} | {ref['finetune_s'] / r['finetune_s']:.2f}x | {r['encode_s']:.1f} | "
            f"{ref['encode_s'] / r['encode_s']:.2f}x | {r['encode_long_s']:.1f} | "
            f"{ref['encode_long_s'] / r['encode_long_s']:.2f}x |"
        )
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
