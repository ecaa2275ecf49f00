"""The UI: start dagster-webserver on loopback against the project and ask its GraphQL API what it sees."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ecom_pipeline.config import REPO_ROOT

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name }
        sensors { name }
        assetNodes { assetKey { path } groupName description kinds owners { ... on TeamAssetOwner { team } } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, query: str) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_webserver_serves_assets_jobs_schedules_and_sensors(tmp_path):
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((REPO_ROOT / ".dagster_home" / "dagster.yaml").read_bytes())  # pools
    env = {**os.environ, "DAGSTER_HOME": str(home), "ECOM_DATA_ROOT": str(tmp_path / "data")}
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        data = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("webserver exited: " + proc.stdout.read()[-3000:])
            try:
                data = _post(f"{base}/graphql", QUERY)
                nodes = data["data"]["repositoriesOrError"].get("nodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data is not None, "webserver never answered"
        repo = data["data"]["repositoriesOrError"]["nodes"][0]
        assert repo["location"]["name"] == "ecom_pipeline"
        jobs = {j["name"] for j in repo["jobs"]}
        assert {"ingest", "features", "training", "scoring", "full_pipeline"} <= jobs
        assert {"daily_ingest_features", "weekly_retraining"} <= {s["name"] for s in repo["schedules"]}
        assert {"inbox_sensor", "drift_retraining", "record_run_failures"} <= {
            s["name"] for s in repo["sensors"]
        }
        assets = {"/".join(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
        for table in ("orders", "reviews", "events"):
            assert f"raw/{table}" in assets and f"staging/{table}" in assets
        for key, node in assets.items():
            assert node["groupName"], key
            assert node["description"], key
            assert node["kinds"], key
            assert node["owners"], key
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
