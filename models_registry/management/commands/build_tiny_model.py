"""Build the project's tiny chat model with the engine python (seeded: same seed, same bytes)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_registry.engine_python import default_engine_python

SCRIPT = Path(__file__).resolve().parents[2] / "engine_scripts" / "build_tiny_model.py"


class Command(BaseCommand):
    help = "Build the tiny chat model (random-weight Llama, local tokenizer) into var/models/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", default=str(settings.VAR_DIR / "models" / "tiny-llama"))
        parser.add_argument("--seed", type=int, default=1234)
        parser.add_argument("--python", default=default_engine_python())
        parser.add_argument(
            "--force", action="store_true", help="rebuild even if the model is already there"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out = Path(options["out"])
        if (out / "model.safetensors").exists() and not options["force"]:
            self.stdout.write(f"tiny model already built at {out} (--force rebuilds)")
            return
        python = options["python"]
        if not Path(python).exists():
            raise CommandError(f"engine python {python} not found: run `make engine` first")
        self.stdout.write(f"building the tiny model into {out} (seed {options['seed']}) ...")
        result = subprocess.run(
            [python, str(SCRIPT), str(out), "--seed", str(options["seed"])],
            capture_output=True,
            text=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            raise CommandError(f"building the tiny model failed:\n{result.stderr[-2000:]}")
        self.stdout.write(self.style.SUCCESS(f"tiny model written to {out}"))
