import os
import sys

# One native thread per call in the server process, set before numpy/torch load their thread pools:
# concurrency comes from requests, and on a busy 2-core machine a multi-threaded BLAS/OpenMP call waits at
# every barrier for a descheduled sibling thread (see ecom_pipeline.api.models._single_threaded_openmp).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # env exception: sets a library variable, reads no setting

from ecom_pipeline.api.app import main

sys.exit(main())
