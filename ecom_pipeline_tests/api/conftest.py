import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from ecom_pipeline_tests.api.build import build, environment

ORDERS = 600


@pytest.fixture(scope="module")
def served_root(tmp_path_factory) -> Path:
    """A small real pipeline run (synthetic shop) with its published snapshot; the env points at it for this
    module only (MLflow's tracking URI included: later modules must not register into this store)."""
    root = tmp_path_factory.mktemp("serving") / "data"
    saved = {k: os.environ.get(k) for k in environment(root, ORDERS)}
    os.environ.update(environment(root, ORDERS))
    prebuilt = os.environ.get("ECOM_SERVING_TEST_ROOT")  # developer shortcut: a root built by build.py
    if prebuilt:
        shutil.copytree(prebuilt, root, ignore=shutil.ignore_patterns("inbox"))
    else:
        build(root, ORDERS)
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    import mlflow  # the app set the process-wide URIs to this root's store: put them back

    mlflow.set_tracking_uri(saved.get("MLFLOW_TRACKING_URI"))
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, app, port: int):
        import uvicorn

        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def start(settings, **kwargs) -> RunningServer:
    from ecom_pipeline.api.app import create_app

    return RunningServer(create_app(settings, **kwargs), free_port())


# module scope: the app's champion poller must not outlive this module's tests (it shares the process)
@pytest.fixture(scope="module")
def server(served_root):
    import dataclasses

    from ecom_pipeline.config import Settings

    # a generous request timeout: the test machine is shared and often far busier than its 2 cores
    settings = dataclasses.replace(Settings.from_env(), api_poll_seconds=1.0, api_timeout_s=60.0)
    with start(settings) as running:
        yield running
