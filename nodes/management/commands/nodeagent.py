"""Run the node agent on this host: ``python -m nodes.agent`` with the project's state dir.

A GPU host needs neither Django nor this command; it exists for hosts that have the whole
project (development, the tests, ``scripts/up.py``). The options are the agent's own
(nodes/agent/cli.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from nodes.agent import cli


class Command(BaseCommand):
    help = "Run the node agent: register, heartbeat, and supervise this node's vLLM workers."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser, settings.VAR_DIR / "agent")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cli.run(options, say=self.stdout.write)
        except cli.AgentError as exc:
            raise CommandError(str(exc)) from exc
