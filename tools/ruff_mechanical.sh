#!/usr/bin/env bash
# The mechanical part of adopting ruff (issue 12 item 8): what ruff rewrites by itself, nothing by hand.
# Deterministic for a given ruff version (pyproject pins ruff 0.17.x), so it can be re-run on any tree, e.g.
# on a merged tree instead of merging the "ruff: mechanical" commit. What ruff cannot fix (long strings,
# comments, SQL, ...) stays for hand edits; `ruff check ecom_pipeline ecom_pipeline_tests benchmarks` lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv when there is one (as the Makefile does), else ruff on PATH
if [ -x .venv/bin/ruff ]; then RUFF=.venv/bin/ruff; else RUFF=ruff; fi
PATHS=(ecom_pipeline ecom_pipeline_tests benchmarks)
"$RUFF" --version
"$RUFF" format "${PATHS[@]}"
# safe fixes only (import order, unused imports, ...); --exit-zero: the findings left are for hand edits
"$RUFF" check --fix --exit-zero --silent "${PATHS[@]}"
# the fixes may leave lines the formatter would write differently (a re-sorted import block)
"$RUFF" format "${PATHS[@]}"
