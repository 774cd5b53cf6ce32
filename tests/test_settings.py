"""Configuration from the environment (docs/configuration.md lists every variable).

Settings are read at import, so each case imports them in a fresh interpreter with exactly
the environment it describes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.environment import env_bool, env_choice, env_float, env_int, env_list
from controlplane.settings import database_from_url

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
    "budgets_when_down": s.GATEWAY_BUDGETS_WHEN_REDIS_DOWN,
    "rate_limits_when_down": s.GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN,
    "read_timeout": s.GATEWAY_UPSTREAM_READ_TIMEOUT,
    "log_level": s.LOGGING["root"]["level"],
    "beat": {name: entry["task"] for name, entry in s.CELERY_BEAT_SCHEDULE.items()},
    "enum_overrides": sorted(s.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]),
    "apps": s.INSTALLED_APPS,
    "context_processors": s.TEMPLATES[0]["OPTIONS"]["context_processors"],
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


def test_a_choice_setting_with_a_typo_stops_startup_naming_the_variable_and_the_choices(
    tmp_path: Path,
) -> None:
    # "Refuse" used to be read as "not refuse": budgets failed open when Redis was down.
    result = load_settings(tmp_path, SECRET_KEY="s", GATEWAY_BUDGETS_WHEN_REDIS_DOWN="Refuse")
    assert result.returncode != 0
    assert (
        "GATEWAY_BUDGETS_WHEN_REDIS_DOWN must be one of 'admit', 'refuse', got 'Refuse'"
        in result.stderr
    )


def test_a_malformed_float_stops_startup_with_the_variables_name(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", GATEWAY_UPSTREAM_READ_TIMEOUT="5min")
    assert result.returncode != 0
    assert "GATEWAY_UPSTREAM_READ_TIMEOUT must be a number" in result.stderr


def test_choices_floats_and_the_log_level_come_from_the_environment(tmp_path: Path) -> None:
    s = settings_for(
        tmp_path,
        SECRET_KEY="s",
        GATEWAY_BUDGETS_WHEN_REDIS_DOWN="admit",
        GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN="refuse",
        GATEWAY_UPSTREAM_READ_TIMEOUT="12.5",
        LOG_LEVEL="WARNING",
    )
    assert (s["budgets_when_down"], s["rate_limits_when_down"]) == ("admit", "refuse")
    assert s["read_timeout"] == 12.5
    assert s["log_level"] == "WARNING"
    defaults = settings_for(tmp_path, SECRET_KEY="s")
    assert (defaults["budgets_when_down"], defaults["rate_limits_when_down"]) == (
        "refuse",
        "admit",
    )
    assert defaults["read_timeout"] == 300.0
    assert defaults["log_level"] == "INFO"


def test_an_unknown_log_level_stops_startup_with_the_levels_it_knows(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", LOG_LEVEL="verbose")
    assert result.returncode != 0
    assert "LOG_LEVEL must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'" in (
        result.stderr
    )


def test_a_number_below_its_meaningful_range_stops_startup(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", GATEWAY_MAX_BODY_BYTES="0")
    assert result.returncode != 0
    assert "GATEWAY_MAX_BODY_BYTES must be at least 1, got 0" in result.stderr
    result = load_settings(tmp_path, SECRET_KEY="s", GATEWAY_REFRESH_SECONDS="-1")
    assert result.returncode != 0
    assert "GATEWAY_REFRESH_SECONDS must be more than 0" in result.stderr


def test_a_redis_url_without_a_redis_scheme_stops_startup(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", REDIS_URL="127.0.0.1:6379")
    assert result.returncode != 0
    assert "REDIS_URL must be a URL" in result.stderr


def test_a_csrf_origin_without_a_scheme_stops_startup(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="s", CSRF_TRUSTED_ORIGINS="cp.example.com")
    assert result.returncode != 0
    assert "CSRF_TRUSTED_ORIGINS" in result.stderr
    assert "https://cp.example.com" in result.stderr


def test_every_periodic_task_and_app_is_configured_once_in_its_section(tmp_path: Path) -> None:
    s = settings_for(tmp_path, SECRET_KEY="s")
    assert s["beat"] == {
        "mark-lost-nodes": "nodes.tasks.mark_lost_nodes",
        "schedule-deployments": "nodes.tasks.schedule_deployments",
        "flush-usage": "metering.tasks.flush_usage",
    }
    assert s["enum_overrides"] == ["NodeStateEnum", "VersionStateEnum", "WorkerStateEnum"]
    assert "drf_spectacular_sidecar" in s["apps"]
    assert s["context_processors"][-1] == "dashboard.context.dashboard"


def test_env_helpers_read_floats_and_choices_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLOAT", "nan")
    with pytest.raises(ImproperlyConfigured, match="X_FLOAT must be a number"):
        env_float("X_FLOAT", 1.0)
    monkeypatch.setenv("X_FLOAT", "0.25")
    assert env_float("X_FLOAT", 1.0) == 0.25
    with pytest.raises(ImproperlyConfigured, match="X_FLOAT must be at least 1"):
        env_float("X_FLOAT", 1.0, minimum=1)
    assert env_float("X_UNSET", 2.5) == 2.5
    monkeypatch.setenv("X_CHOICE", " admit")
    with pytest.raises(ImproperlyConfigured, match="X_CHOICE must be one of 'admit', 'refuse'"):
        env_choice("X_CHOICE", ("admit", "refuse"), "refuse")
    monkeypatch.setenv("X_CHOICE", "admit")
    assert env_choice("X_CHOICE", ("admit", "refuse"), "refuse") == "admit"
    assert env_choice("X_UNSET", ("admit", "refuse"), "refuse") == "refuse"
    monkeypatch.setenv("X_INT", "-3")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be at least 0, got -3"):
        env_int("X_INT", 1, minimum=0)


# --- The settings file and its documentation ---------------------------------------------
SETTINGS_FILE = ROOT / "controlplane" / "settings.py"
HELPERS = {"env_bool", "env_int", "env_float", "env_choice", "env_list", "env_str", "env_url"}


def variables_read_by_settings() -> set[str]:
    """The name of every environment variable settings.py reads, found in its syntax tree."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS_FILE.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in HELPERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names


def test_settings_read_the_environment_only_through_helpers_that_name_the_variable() -> None:
    direct = [
        node.lineno
        for node in ast.walk(ast.parse(SETTINGS_FILE.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
    ]
    assert direct == [], f"settings.py reads os.environ directly at lines {direct}"


def documented_rows() -> dict[str, str]:
    """docs/configuration.md's table rows, by the variable in their first cell."""
    return {
        line.split("|")[1].strip().strip("`"): line
        for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
        if line.startswith("| `")
    }


def test_every_variable_settings_read_is_documented_with_its_default() -> None:
    read = variables_read_by_settings()
    assert len(read) > 30, "the syntax-tree walk found too few variables: is it still right?"
    assert sorted(read - set(documented_rows())) == []


def test_every_choice_setting_documents_each_value_it_accepts() -> None:
    tree = ast.parse(SETTINGS_FILE.read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Tuple)
    }
    rows = documented_rows()
    choices_of = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "env_choice":
            name, choices = node.args[0], node.args[1]
            assert isinstance(name, ast.Constant)
            choices_of[name.value] = (
                constants[choices.id]
                if isinstance(choices, ast.Name)
                else ast.literal_eval(choices)
            )
    assert set(choices_of) >= {"GATEWAY_BUDGETS_WHEN_REDIS_DOWN", "LOG_LEVEL"}
    for name, choices in choices_of.items():
        cells = rows[name].split("|")
        assert all(f"`{choice}`" in cells[3] for choice in choices), rows[name]


def module_level(tree: ast.Module) -> list[ast.AST]:
    """Every node of the module's own statements, not inside a function body."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            continue
        found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def test_every_setting_is_assigned_once_in_its_section() -> None:
    """Each setting has one home: no later section appends to, updates or replaces it."""
    assigned: set[str] = set()
    changed = []
    for node in module_level(ast.parse(SETTINGS_FILE.read_text())):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper():
                if target.id in assigned or isinstance(node, ast.AugAssign):
                    changed.append(f"{target.id} at line {target.lineno}")
                assigned.add(target.id)
            elif isinstance(target, ast.Subscript):
                changed.append(f"{ast.unparse(target)} at line {target.lineno}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"append", "extend", "update", "setdefault", "insert"}
        ):
            changed.append(f"{ast.unparse(node.func)} at line {node.lineno}")
    assert len(assigned) > 50
    assert changed == []
