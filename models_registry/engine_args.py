"""The vLLM arguments a model version may set, checked before they ever reach a command line.

The control plane owns the arguments that wire a worker into the system (model path, port,
API key, served name, parallelism): those are refused here so a version cannot override them,
and ``engine_command.build`` is the one place that sets them. Anything not in ALLOWED is
refused too, so a typo fails at save time, not at engine start.

A version may spell an argument ``--max-num-seqs``, ``max-num-seqs`` or ``max_num_seqs``;
``canonical`` is the one reading of those spellings, used by validation, by the command line
and by every rule that asks what an argument is set to (``scheduling_policy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Set by the control plane (engine_command.build) and the node agent; never by extra_args.
RESERVED = frozenset(
    {
        "model",
        "host",
        "port",
        "api-key",
        "served-model-name",
        "tensor-parallel-size",
        "pipeline-parallel-size",
        "data-parallel-size",
        "dtype",
        "quantization",
        "max-model-len",
        "enable-prefix-caching",
        "speculative-config",
        "revision",
        "trust-remote-code",
        "allowed-local-media-path",
        "ssl-keyfile",
        "ssl-certfile",
    }
)


@dataclass(frozen=True)
class Arg:
    kind: type
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


ALLOWED: dict[str, Arg] = {
    "max-num-seqs": Arg(int, minimum=1, maximum=65536),
    "max-num-batched-tokens": Arg(int, minimum=1),
    "block-size": Arg(int, minimum=1, maximum=256),
    "gpu-memory-utilization": Arg(float, minimum=0.01, maximum=1.0),
    "swap-space": Arg(float, minimum=0),
    "kv-cache-dtype": Arg(str, choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2")),
    "enforce-eager": Arg(bool),
    "enable-chunked-prefill": Arg(bool),
    "scheduling-policy": Arg(str, choices=("fcfs", "priority")),
    "seed": Arg(int, minimum=0),
    "load-format": Arg(str, choices=("auto", "safetensors", "pt", "dummy")),
    "tokenizer-mode": Arg(str, choices=("auto", "slow", "mistral")),
    "max-logprobs": Arg(int, minimum=0),
    "disable-log-requests": Arg(bool),
    "enable-log-requests": Arg(bool),  # vLLM >= 0.10's spelling; DEBUG logs each request body
    "api-server-count": Arg(int, minimum=1, maximum=64),
    "generation-config": Arg(str),
    "override-generation-config": Arg(dict),
    "limit-mm-per-prompt": Arg(dict),
    "cpu-offload-gb": Arg(float, minimum=0),
    "enable-lora": Arg(bool),
    "max-loras": Arg(int, minimum=1),
    "max-lora-rank": Arg(int, minimum=1),
}


def canonical(name: object) -> str:
    """The argument's name as vLLM's flag spells it, without the dashes: ``max-num-seqs``."""
    return str(name).removeprefix("--").replace("_", "-")


def value_of(extra_args: Mapping[str, Any] | None, name: str) -> Any:
    """What ``extra_args`` sets argument ``name`` to, whichever spelling it uses; else None."""
    for raw_name, value in (extra_args or {}).items():
        if canonical(raw_name) == name:
            return value
    return None


def scheduling_policy(extra_args: Mapping[str, Any] | None) -> str:
    """The engine's scheduling policy: "priority" makes vLLM order requests by the priority
    each carries (the gateway then sends the tenant's); vLLM's default is "fcfs"."""
    policy = value_of(extra_args, "scheduling-policy")
    return str(policy) if policy else "fcfs"


def validate(extra_args: object) -> dict[str, str]:
    """Return {argument: problem} for every bad entry; empty when the arguments are fine."""
    if not isinstance(extra_args, Mapping):
        return {"__all__": "Expected an object mapping vLLM argument names to values."}
    problems: dict[str, str] = {}
    seen: dict[str, object] = {}
    for raw_name, value in extra_args.items():
        name = canonical(raw_name)
        if name in seen:
            problems[raw_name] = f"'{name}' is already set (as {seen[name]!r})."
            continue
        seen[name] = raw_name
        if name in RESERVED:
            problems[raw_name] = (
                f"'{name}' is set by the control plane (or by its own field on the version) "
                "and cannot be overridden."
            )
            continue
        spec = ALLOWED.get(name)
        if spec is None:
            problems[raw_name] = f"'{name}' is not an allowed vLLM argument."
            continue
        problem = _check(spec, value)
        if problem:
            problems[raw_name] = problem
    return problems


def _check(spec: Arg, value: Any) -> str | None:
    if spec.kind is bool:
        return None if isinstance(value, bool) else "Expected true or false."
    if spec.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "Expected an integer."
    if spec.kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "Expected a number."
    if spec.kind is str and not isinstance(value, str):
        return "Expected a string."
    if spec.kind is dict and not isinstance(value, dict):
        return "Expected an object."
    if spec.choices and value not in spec.choices:
        return f"Expected one of: {', '.join(spec.choices)}."
    if spec.minimum is not None and value < spec.minimum:
        return f"Must be at least {spec.minimum}."
    if spec.maximum is not None and value > spec.maximum:
        return f"Must be at most {spec.maximum}."
    return None
