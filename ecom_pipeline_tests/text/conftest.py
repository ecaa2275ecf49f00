from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory) -> Path:
    """One converted-model cache per test session (the same path from every test package, so the
    encoder registry's in-process cache loads each model once)."""
    path = tmp_path_factory.getbasetemp() / "shared_models"
    path.mkdir(exist_ok=True)
    return path
