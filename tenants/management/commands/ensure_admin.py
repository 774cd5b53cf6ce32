"""Create the first platform admin if there is none, and say how to sign in."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants.models import Membership, Role


class Command(BaseCommand):
    help = "Create a platform admin user (ADMIN_USERNAME / ADMIN_PASSWORD) unless one exists."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password_file = settings.VAR_DIR / "admin-password.txt"
        if User.objects.filter(username=username).exists():
            where = f" (password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"admin user '{username}' exists{where}")
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        Membership.objects.create(user=user, role=Role.PLATFORM_ADMIN)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(
            self.style.SUCCESS(f"created admin user '{username}' with password {password}")
        )
        self.stdout.write(f"(also written to {password_file})")
