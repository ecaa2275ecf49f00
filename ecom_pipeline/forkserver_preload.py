"""Imported once by the multiprocess executor's forkserver (``automation/executors.FORKSERVER_PRELOAD``).

Every step process forks from that server, then loads the code location from its pointer and opens the
Dagster instance.  Done here once per run instead of once per step (measured at load 15 on the 2-core
machine: building the repository from ``defs`` 2.5 s, opening the instance 1.8 s, of ~2.5-4 s per step):

* the repository (asset graph, jobs) is built: ``Definitions.get_repository_def`` caches it on ``defs``,
  which the step finds already imported;
* the instance's storage modules (SQLAlchemy, Alembic, ...: ~500 modules) are imported by opening and
  closing the instance, so no connection is carried into the forked steps.

Not in ``automation/``: definitions.py imports every module there while ``defs`` is still being built.
"""

import os

# Before anything loads torch, hence OpenMP, which reads this once: a launched run puts two steps on the
# cores at once, and OpenMP threads that spin while they wait burn the core their sibling step needs (the
# review fine-tune: 2.9x faster beside a busy step, 1.2x slower alone; benchmarks/omp_wait_policy.py).
# Only the forkserver's step processes: in-process runs have the cores to themselves.  A user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # env exception: OpenMP's own variable

import dagster as dg  # noqa: E402 - after the OpenMP policy above

from ecom_pipeline.definitions import defs  # noqa: E402

defs.get_repository_def().get_all_jobs()
# env exception: DAGSTER_HOME is Dagster's own variable; only the run worker's instance has modules to import
if os.environ.get("DAGSTER_HOME"):
    with dg.DagsterInstance.get():
        pass
