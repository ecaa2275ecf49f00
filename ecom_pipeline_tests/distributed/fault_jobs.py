"""The smoke job with the kill tests' fault points installed in whichever process builds it.

A Celery worker rebuilds the job from this module (``dg.reconstructable``) in its own process, so the fault
points (test code: production has no fault hook) are installed exactly where the step runs.
"""

import dagster as dg

from ecom_pipeline.distributed.smoke import smoke_job
from ecom_pipeline_tests.reliability.fault_points import install


def smoke_job_with_fault_points() -> dg.JobDefinition:
    install()
    return smoke_job()
