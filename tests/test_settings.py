"""Configuration from the environment (docs/configuration.md lists every variable).

Settings are read at import, so each case imports them in a fresh interpreter with exactly
the environment it describes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.settings import database_from_url, env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
from controlplane import settings as s
print(json.dumps({
    "debug": s.DEBUG,
    "secret_key": s.SECRET_KEY,
    "key_pepper": s.KEY_PEPPER,
    "worker_key_secret": s.WORKER_KEY_SECRET,
    "allowed_hosts": s.ALLOWED_HOSTS,
    "engine": s.DATABASES["default"]["ENGINE"],
    "db_name": str(s.DATABASES["default"]["NAME"]),
    "eager": s.CELERY_TASK_ALWAYS_EAGER,
    "broker": s.CELERY_BROKER_URL,
    "cache": s.CACHES["default"]["BACKEND"],
    "heartbeat_timeout": s.NODE_HEARTBEAT_TIMEOUT_SECONDS,
    "secure_cookies": s.SESSION_COOKIE_SECURE,
    "docs_assets": s.SPECTACULAR_SETTINGS.get("SWAGGER_UI_DIST"),
}))
"""


def load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    clean["CONTROLPLANE_VAR_DIR"] = str(tmp_path / "var")
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_for(tmp_path: Path, **env: str) -> dict:
    result = load_settings(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_it_refuses_to_start_without_a_secret_key_unless_debug(tmp_path: Path) -> None:
    result = load_settings(tmp_path, DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert settings_for(tmp_path, DEBUG="1")["secret_key"].startswith("dev-only")


def test_the_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    s = settings_for(tmp_path, SECRET_KEY="s3cret")
    assert s["debug"] is False
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["db_name"] == str(tmp_path / "var" / "controlplane.sqlite3")
    assert s["eager"] is True
    assert s["broker"] == "memory://"
    assert s["cache"].endswith("LocMemCache")
    assert s["key_pepper"] == s["worker_key_secret"] == "s3cret"
    assert s["heartbeat_timeout"] == 45
    assert s["secure_cookies"] is True
    assert s["docs_assets"] == "SIDECAR"


def test_redis_url_switches_celery_and_the_cache_to_redis(tmp_path: Path) -> None:
    s = settings_for(tmp_path, SECRET_KEY="s", REDIS_URL="redis://127.0.0.1:6379/1")
    assert s["eager"] is False
    assert s["broker"] == "redis://127.0.0.1:6379/1"
    assert s["cache"].endswith("RedisCache")
    forced = settings_for(
        tmp_path, SECRET_KEY="s", REDIS_URL="redis://127.0.0.1:6379/1", CELERY_TASK_ALWAYS_EAGER="1"
    )
    assert forced["eager"] is True


def test_the_pepper_and_worker_secret_can_be_set_apart_from_the_secret_key(
    tmp_path: Path,
) -> None:
    s = settings_for(tmp_path, SECRET_KEY="a", KEY_PEPPER="b", WORKER_KEY_SECRET="c")
    assert (s["secret_key"], s["key_pepper"], s["worker_key_secret"]) == ("a", "b", "c")


def test_lists_and_integers_come_from_the_environment(tmp_path: Path) -> None:
    s = settings_for(
        tmp_path,
        SECRET_KEY="s",
        ALLOWED_HOSTS="cp.example.com, api.example.com",
        NODE_HEARTBEAT_TIMEOUT_SECONDS="90",
    )
    assert s["allowed_hosts"] == ["cp.example.com", "api.example.com"]
    assert s["heartbeat_timeout"] == 90


def test_a_malformed_value_stops_startup_with_the_variables_name(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", NODE_HEARTBEAT_TIMEOUT_SECONDS="soon")
    assert result.returncode != 0
    assert "NODE_HEARTBEAT_TIMEOUT_SECONDS must be an integer" in result.stderr


def test_database_url_is_parsed_into_django_settings() -> None:
    db = database_from_url("postgres://cp:p%40ss@db.internal:6543/control?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("control", "cp", "p@ss")
    assert (db["HOST"], db["PORT"]) == ("db.internal", "6543")
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert database_from_url("sqlite:///tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        database_from_url("mysql://db/x")


def test_env_helpers_reject_what_they_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOL", "maybe")
    monkeypatch.setenv("X_INT", "1.5")
    monkeypatch.setenv("X_LIST", " a, ,b ")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL must be a boolean"):
        env_bool("X_BOOL", False)
    with pytest.raises(ImproperlyConfigured, match="X_INT must be an integer"):
        env_int("X_INT", 0)
    assert env_list("X_LIST", []) == ["a", "b"]
    monkeypatch.setenv("X_BOOL", "off")
    assert env_bool("X_BOOL", True) is False
    assert env_int("X_UNSET", 7) == 7
