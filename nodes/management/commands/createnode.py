"""Create a node and print its agent credential, once (bootstrap without the REST API)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from nodes import credentials
from nodes.models import Node


class Command(BaseCommand):
    help = "Create a node (or, with --rotate, replace its credential) and print the credential."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="node name: lowercase letters, digits, hyphens")
        parser.add_argument("--address", help="host or IP where the gateway reaches its workers")
        parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument(
            "--rotate", action="store_true", help="issue a new credential for an existing node"
        )
        parser.add_argument(
            "--quiet", action="store_true", help="print only the credential (for scripts)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        labels = {}
        for item in options["label"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--label expects KEY=VALUE, got {item!r}")
            labels[key] = value
        with transaction.atomic():
            node = Node.objects.filter(name=name).first()
            if node is not None and not options["rotate"]:
                raise CommandError(
                    f"node {name!r} exists; pass --rotate to issue it a new credential "
                    "(the old one stops working)"
                )
            if node is None:
                if not options["address"]:
                    raise CommandError("--address is required for a new node")
                node = Node(name=name, address=options["address"], labels=labels)
                try:
                    node.full_clean(exclude=["credential_prefix", "credential_hash"])
                except ValidationError as exc:
                    raise CommandError(
                        "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                    ) from exc
                node.save()
            elif options["address"]:
                node.address = options["address"]
                node.save(update_fields=["address", "updated_at"])
            plaintext = credentials.issue(node)
        if options["quiet"]:
            self.stdout.write(plaintext)
            return
        self.stdout.write(self.style.SUCCESS(f"node {node.name} ({node.address})"))
        self.stdout.write(f"credential (shown once, store it now): {plaintext}")
        self.stdout.write(
            f"start its agent: NODE_CREDENTIAL={plaintext} python manage.py nodeagent "
            f"--control-plane http://CONTROL-PLANE:8000 --name {node.name} "
            f"--address {node.address}"
        )
