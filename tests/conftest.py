"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def eval_findings():
    """``benchmarks/eval_findings.py`` loaded as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_findings.py"
    spec = importlib.util.spec_from_file_location("eval_findings", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("eval_findings", mod)
    spec.loader.exec_module(mod)
    return mod
