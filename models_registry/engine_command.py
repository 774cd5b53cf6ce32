"""The vLLM command line of a worker, built in this one place on the control-plane side.

Everything the engine is started with comes from here: the python of the version's runtime,
the OpenAI-compatible server module, the weights and the name clients ask for, the flags
that come from the version's own fields, the tensor parallelism of the deployment, and
last the version's validated ``extra_args`` (``engine_args``, which refuses every flag set
here, see ``engine_args.RESERVED``). The node agent receives this list in the worker's
assignment and adds only ``--host`` and ``--port``, which it chooses on its node
(``nodes.agent.protocol.engine_command``). The engine key is never on the command line: the
agent gives it to the engine in its environment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from models_registry.engine_args import canonical

if TYPE_CHECKING:
    from models_registry.models import ModelVersion

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def build(version: ModelVersion, *, gpus_per_replica: int = 1) -> list[str]:
    """The whole argv of an engine serving ``version``, except ``--host`` and ``--port``."""
    argv = [
        version.runtime.python_path,
        "-m",
        SERVER_MODULE,
        "--model",
        version.weights_source,
        "--served-model-name",
        version.model.name,
    ]
    argv += version_flags(version)
    if gpus_per_replica > 1:
        argv += ["--tensor-parallel-size", str(gpus_per_replica)]
    argv += to_cli(version.extra_args or {})
    return argv


def version_flags(version: ModelVersion) -> list[str]:
    """The flags that come from the version's own fields (each one reserved in engine_args)."""
    argv: list[str] = []
    if version.dtype and version.dtype != "auto":
        argv += ["--dtype", version.dtype]
    if version.quantization:
        argv += ["--quantization", version.quantization]
    if version.max_model_len:
        argv += ["--max-model-len", str(version.max_model_len)]
    if version.weights_revision:
        argv += ["--revision", version.weights_revision]
    if not version.enable_prefix_caching:
        argv.append("--no-enable-prefix-caching")
    if version.speculative_config:
        argv += ["--speculative-config", json.dumps(version.speculative_config)]
    return argv


def to_cli(extra_args: Mapping[str, Any]) -> list[str]:
    """Render validated ``extra_args`` as vLLM flags: true is ``--flag``, false ``--no-flag``,
    an object its JSON."""
    argv: list[str] = []
    for raw_name, value in extra_args.items():
        flag = "--" + canonical(raw_name)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv
