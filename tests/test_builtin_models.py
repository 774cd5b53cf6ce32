"""The engine-side management commands: the tiny model build, runtimes, built-in models.

They run the engine python (not vLLM engines), so they need `make engine` but no worker.
"""

from __future__ import annotations

import hashlib
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from devtools.engine import ENGINE_PYTHON, TINY_MODEL
from models_registry.models import EngineRuntime, ModelVersion

needs_engine = pytest.mark.skipif(
    not ENGINE_PYTHON.exists(), reason="no engine environment: make engine"
)


def digests(directory: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(directory.iterdir())
        if f.is_file()
    }


@needs_engine
def test_the_tiny_model_build_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    first, second, other_seed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    call_command("build_tiny_model", "--out", str(first), stdout=StringIO())
    call_command("build_tiny_model", "--out", str(second), stdout=StringIO())
    assert digests(first) == digests(second)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(digests(first))
    assert (
        "chat_template" in (first / "tokenizer_config.json").read_text()
        or (first / "chat_template.jinja").exists()
    )
    call_command("build_tiny_model", "--out", str(other_seed), "--seed", "99", stdout=StringIO())
    assert digests(other_seed)["model.safetensors"] != digests(first)["model.safetensors"]


@needs_engine
def test_an_existing_build_is_kept_unless_forced(tmp_path: Path) -> None:
    call_command("build_tiny_model", "--out", str(tmp_path), stdout=StringIO())
    out = StringIO()
    call_command("build_tiny_model", "--out", str(tmp_path), stdout=out)
    assert "already built" in out.getvalue()


@needs_engine
@pytest.mark.django_db
def test_registering_a_runtime_probes_its_vllm_version() -> None:
    out = StringIO()
    call_command("register_runtime", "--cpu", "--python", str(ENGINE_PYTHON), stdout=out)
    runtime = EngineRuntime.objects.get(name="vllm-cpu")
    assert runtime.version == "0.32.0"
    assert runtime.python_path == str(ENGINE_PYTHON)
    assert runtime.environment["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "vLLM 0.32.0" in out.getvalue()
    # Running it again updates rather than duplicates.
    call_command("register_runtime", "--python", str(ENGINE_PYTHON), "--env", "A=b", stdout=out)
    assert EngineRuntime.objects.get(name="vllm-cpu").environment["A"] == "b"
    assert EngineRuntime.objects.count() == 1


@pytest.mark.django_db
def test_a_python_without_vllm_is_refused_with_the_reason() -> None:
    import sys

    with pytest.raises(CommandError, match="No module named 'vllm'"):
        call_command("register_runtime", "--python", sys.executable)
    assert not EngineRuntime.objects.exists()


@needs_engine
@pytest.mark.django_db
def test_the_builtin_models_are_registered_as_active_versions() -> None:
    call_command("register_runtime", "--cpu", "--python", str(ENGINE_PYTHON), stdout=StringIO())
    tiny = TINY_MODEL
    if not (tiny / "config.json").exists():
        pytest.skip("no tiny model built")
    call_command("register_builtin_models", "--tiny-dir", str(tiny), stdout=StringIO())
    chat = ModelVersion.objects.get(model__name="tiny-llama")
    embedding = ModelVersion.objects.get(model__name="all-minilm-l6-v2")
    assert (chat.model.task, embedding.model.task) == ("chat", "embedding")
    assert chat.state == embedding.state == "active"
    assert chat.weights_source == str(tiny.resolve())
    assert Path(embedding.weights_source, "config.json").exists()
    assert embedding.weights_size_bytes and embedding.weights_size_bytes > 10_000_000
    assert chat.dtype == "float32"
    call_command("register_builtin_models", "--tiny-dir", str(tiny), stdout=StringIO())
    assert ModelVersion.objects.count() == 2
