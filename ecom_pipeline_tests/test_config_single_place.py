"""One configuration: ``ecom_pipeline/config.py`` is the only module that reads the environment; every other
variable is declared there with its one default (``VARIABLES``) and read through ``config.env``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ecom_pipeline
from ecom_pipeline import config

PACKAGE = Path(ecom_pipeline.__file__).resolve().parent
ENV_USE = re.compile(r"os\.environ|os\.getenv|getenv\(")


def test_only_config_reads_the_environment():
    """Other modules may only *write* library variables (thread counts, offline flags), each marked
    ``env exception`` with its reason on the line or the line before."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "config.py":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if (
                ENV_USE.search(line)
                and "env exception" not in line
                and (i == 0 or "env exception" not in lines[i - 1])
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{i + 1}: {line.strip()}")
    assert offenders == []


def _env_calls(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "env"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.lineno, node.args[0].value))
    return out


def test_every_variable_read_is_declared_once():
    undeclared = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {name}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for line, name in _env_calls(p)
        if name not in config.VARIABLES
    ]
    assert undeclared == []


def test_env_uses_the_declared_default_and_refuses_undeclared_names(monkeypatch):
    monkeypatch.delenv("ECOM_MAX_CONCURRENT", raising=False)
    assert config.env("ECOM_MAX_CONCURRENT") == "2"
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "  ")  # blank = unset
    assert config.env("ECOM_MAX_CONCURRENT") == "2"
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "4")
    assert config.env("ECOM_MAX_CONCURRENT") == "4"
    with pytest.raises(KeyError):
        config.env("ECOM_NOT_A_SETTING")


def test_configuration_doc_lists_every_declared_variable():
    doc = (PACKAGE.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    start = doc.index(config.VARIABLES_DOC_BEGIN)
    end = doc.index(config.VARIABLES_DOC_END) + len(config.VARIABLES_DOC_END)
    assert doc[start:end] == config.variables_markdown(), (
        "docs/configuration.md drifted from config.VARIABLES: regenerate with "
        "`python -m ecom_pipeline.config`"
    )
