"""Register the models that need no download: the tiny chat model and MiniLM embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from controlplane import audit
from models_registry import services
from models_registry.engine_python import dir_size, embedding_model_dir
from models_registry.models import EngineRuntime, Model, ModelVersion, Task, VersionState

# CPU engines need a small memory reservation and eager mode here (ENGINE_NOTES).
CPU_ARGS = {"gpu-memory-utilization": 0.3, "enforce-eager": True}
# "auto" picks bfloat16 on CPUs with AVX-512 BF16, and on this project's machines the worker
# then died of SIGILL at its first request; both models are float32 on disk anyway.
DTYPE = "float32"


class Command(BaseCommand):
    help = "Create the tiny chat model and the embedding model as Models with active versions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runtime", default="vllm-cpu", help="EngineRuntime name")
        parser.add_argument("--tiny-dir", default=str(settings.VAR_DIR / "models" / "tiny-llama"))
        parser.add_argument("--chat-name", default="tiny-llama")
        parser.add_argument("--embedding-name", default="all-minilm-l6-v2")
        parser.add_argument("--skip-embedding", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        runtime = EngineRuntime.objects.filter(name=options["runtime"]).first()
        if runtime is None:
            raise CommandError(
                f"no engine runtime {options['runtime']!r}: run `manage.py register_runtime`"
            )
        tiny = Path(options["tiny_dir"]).resolve()
        if not (tiny / "config.json").exists():
            raise CommandError(f"{tiny} has no model: run `manage.py build_tiny_model` first")
        wanted = [(options["chat_name"], Task.CHAT, tiny, "seeded random-weight Llama (tests)")]
        if not options["skip_embedding"]:
            embedding = Path(embedding_model_dir(runtime.python_path))
            wanted.append(
                (options["embedding_name"], Task.EMBEDDING, embedding, "all-MiniLM-L6-v2")
            )
        for name, task, path, description in wanted:
            with transaction.atomic():
                model, _ = Model.objects.get_or_create(
                    name=name, defaults={"task": task, "description": description}
                )
                version = ModelVersion.objects.filter(model=model, label="builtin").first()
                if version is None:
                    version = ModelVersion(model=model, label="builtin")
                created = version._state.adding
                version.weights_source = str(path)
                version.weights_size_bytes = dir_size(path)
                version.runtime = runtime
                version.extra_args = CPU_ARGS
                version.kv_cache_bytes = 1 << 30
                version.dtype = DTYPE
                version.state = VersionState.ACTIVE
                services.save_version(version, origin=audit.CLI)
            self.stdout.write(
                f"{'registered' if created else 'updated'} {model.name}@{version.label} "
                f"({task}, {version.weights_size_bytes} bytes at {path})"
            )
