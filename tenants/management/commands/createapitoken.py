"""Issue a provisioning-API token for a user and print it, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from controlplane import audit
from tenants import services
from tenants.models import ApiToken


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print its plaintext (shown only this once). "
        "The token acts as the user, with the user's role."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What the token is for, e.g. terraform")
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help="Expire after this many days"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist as exc:
            raise CommandError(f"No user named {options['username']!r}.") from exc
        if not user.is_active:
            raise CommandError(f"User {user.username!r} is inactive; its tokens would not work.")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        token = ApiToken(user=user, name=options["name"], expires_at=expires_at)
        try:
            plaintext = services.issue_token(token, origin=audit.CLI)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        # Only the plaintext on stdout, so scripts can capture it: TOKEN=$(manage.py ...)
        self.stdout.write(plaintext)
        self.stderr.write(f"token {token.prefix}… for {user.username}: shown only this once")
