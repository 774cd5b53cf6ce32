"""`make reliability`'s short version in the suite: every fault scenario against the real stack
(a PostgreSQL and a Redis of its own, the API, two gateway processes, a Celery worker, two node
agents with a real vLLM worker each), run as the command runs it, and held to its guarantees."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reliability.scenarios import SCENARIOS
from reliability.stack import pg_bin

ROOT = Path(__file__).resolve().parent.parent


def _have_postgres_server() -> bool:
    try:
        pg_bin("initdb")
    except SystemExit:
        return False
    return True


pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not (ROOT / ".venv-engine" / "bin" / "python").exists(), reason="no engine: make engine"
    ),
    pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server"),
    pytest.mark.skipif(not _have_postgres_server(), reason="no PostgreSQL server programs"),
]


def test_every_fault_scenario_keeps_its_guarantees() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reliability", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    sys.stdout.write(result.stdout)  # the table, in the test's output when it fails
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios kept every guarantee" in result.stdout
