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

import dagster as dg

from ecom_pipeline.definitions import defs

defs.get_repository_def().get_all_jobs()
# env exception: DAGSTER_HOME is Dagster's own variable; only the run worker's instance has modules to import
if os.environ.get("DAGSTER_HOME"):
    with dg.DagsterInstance.get():
        pass
