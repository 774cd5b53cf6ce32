"""Settings for the control plane, read from the environment.

Every variable is documented in docs/configuration.md (tests/test_settings.py checks that none
is missing). The defaults make `make up` work on a fresh machine (SQLite, no Redis, eager
Celery); production sets DATABASE_URL, REDIS_URL, SECRET_KEY and KEY_PEPPER.

Every value goes through a helper of controlplane/environment.py, which names the variable
when it cannot read it, so a typo stops the start instead of running with a guess: a choice
such as GATEWAY_BUDGETS_WHEN_REDIS_DOWN is compared exactly (`Refuse` is refused, not read
as "not refuse", which would fail open). Unset and empty both mean the default.

The file reads top to bottom by concern, and each setting is assigned once, in its section
(tests/test_settings.py checks it): core; database and Redis; security; apps, middleware and
templates (the dashboard's context processor among them); REST API; Celery (every periodic
task); gateway; nodes; metering; logging.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from controlplane.environment import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
)

# --- Settings built from variables by more than a helper -----------------------------------


def database_from_url(url: str | None) -> dict[str, object]:
    """Turn DATABASE_URL into Django's DATABASES entry; empty means a SQLite file under var/."""
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "controlplane.sqlite3"),
            # The node agent and the gateway write while the dashboard reads.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    parsed = urlparse(url)
    if parsed.scheme in {"sqlite", "sqlite3"}:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parsed.path) or ":memory:"}
    if parsed.scheme not in {"postgres", "postgresql", "psql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {parsed.scheme!r} is not supported: use postgres:// or sqlite://"
        )
    query = parse_qs(parsed.query)
    options = {"sslmode": query["sslmode"][0]} if "sslmode" in query else {}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "controlplane",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }


def cache_for(redis_url: str) -> dict[str, dict[str, str]]:
    """Redis when there is one (shared by every process: sign-in counts), else process memory."""
    if redis_url:
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
            }
        }
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def secret_key(debug: bool) -> str:
    value = env_str("SECRET_KEY", "")
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(or DEBUG=1 for a development-only default)."
        )
    return "dev-only-insecure-secret-key-do-not-use-in-production"


def trusted_origins(name: str) -> list[str]:
    """Django compares whole origins: a bare host name would never match, so refuse it here."""
    origins = env_list(name, [])
    for origin in origins:
        if not origin.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f"{name} entries must start with http:// or https://, got {origin!r} "
                f"(did you mean 'https://{origin}'?)"
            )
    return origins


# --- Core ---------------------------------------------------------------------------------
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CONTROLPLANE_VAR_DIR", "") or BASE_DIR / "var")
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key(DEBUG)
ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Database, Redis and the cache --------------------------------------------------------
DATABASES = {"default": database_from_url(env_str("DATABASE_URL", ""))}
# Redis is the Celery broker, the cache, the gateway's quota counters and usage buffer, and
# the invalidation channel. Empty: in-process fallbacks for each (the embedded mode).
REDIS_URL = env_url("REDIS_URL", "", schemes=("redis", "rediss", "unix"))
CACHES = cache_for(REDIS_URL)

# --- Security: keys, hosts, cookies, sign-in ----------------------------------------------
# The pepper keys the HMAC of every API key and token. Rotating it invalidates every key,
# so it is its own setting rather than SECRET_KEY (which operators rotate for sessions).
KEY_PEPPER = env_str("KEY_PEPPER", SECRET_KEY)
# Workers' engine API keys are derived from this secret and the worker's id, so they are
# stored nowhere: the gateway and the owning node agent recompute them.
WORKER_KEY_SECRET = env_str("WORKER_KEY_SECRET", KEY_PEPPER)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = trusted_origins("CSRF_TRUSTED_ORIGINS")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Failed password sign-ins allowed per username and per client address within a window, before
# sign-in is refused (429) until the window ends; 0 disables that limit. Counted in the cache
# (Redis with REDIS_URL, shared by every process). See docs/security.md.
LOGIN_FAILURES_PER_USERNAME = env_int("LOGIN_FAILURES_PER_USERNAME", 5, minimum=0)
LOGIN_FAILURES_PER_IP = env_int("LOGIN_FAILURES_PER_IP", 20, minimum=0)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60, minimum=1)

# --- Apps, middleware, templates, static files --------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and Redoc assets served as our own static files (see the REST API section).
    "drf_spectacular_sidecar",
    "django_htmx",
    "controlplane",
    "tenants",
    "models_registry",
    "nodes",
    "metering",
    "dashboard",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ from the app server itself (granian has no static handler), with
    # compressed, cache-busting copies made by collectstatic.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # Every dashboard page's navigation follows the viewer's role.
                "dashboard.context.dashboard",
            ],
        },
    },
]
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# In development, serve straight from the apps' and project's static folders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- REST API (docs/api.md) ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.api.permissions.IsPlatformAdmin"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "controlplane.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"login": "10/min"},
    "EXCEPTION_HANDLER": "controlplane.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM control plane provisioning API",
    "DESCRIPTION": (
        "Manage tenants, API keys, quotas, models, versions, nodes and deployments. "
        "Authenticate with `Authorization: Bearer <api token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # The interactive docs' assets come from the sidecar package: drf-spectacular's default is
    # a CDN, which machines without internet access cannot reach.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `state`; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "NodeStateEnum": "nodes.models.NodeState",
        "WorkerStateEnum": "nodes.models.WorkerState",
        "VersionStateEnum": "models_registry.models.VersionState",
    },
}

# --- Celery (controlplane/celery.py) ------------------------------------------------------
CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
# Without Redis there is no broker to hand tasks to: run them in-process, as they are called.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
# Every periodic task, in one place (seconds between runs; `celery worker --beat` runs them).
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Nodes: mark nodes lost after NODE_HEARTBEAT_TIMEOUT_SECONDS and reschedule their workers.
    "mark-lost-nodes": {"task": "nodes.tasks.mark_lost_nodes", "schedule": 15.0},
    # Nodes: place replicas the event-driven scheduling missed (a node came back, a retry).
    "schedule-deployments": {"task": "nodes.tasks.schedule_deployments", "schedule": 30.0},
    # Metering: move usage records from the Redis buffer to the database.
    "flush-usage": {"task": "metering.tasks.flush_usage", "schedule": 2.0},
}

# --- Gateway (the /v1/ inference endpoint; docs/gateway.md describes every setting) --------
# Largest request body accepted; bigger ones get 413 before any parsing.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1)
# Tokens a request reserves against token quotas when it sends no max_tokens.
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 1024, minimum=1)
# Upstream (engine) timeouts, seconds: connecting, and waiting between bytes once connected.
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env_float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 3.0, above=0)
GATEWAY_UPSTREAM_READ_TIMEOUT = env_float("GATEWAY_UPSTREAM_READ_TIMEOUT", 300.0, above=0)
# Safety net beside pub/sub invalidation: reload keys, routes and quotas this often (seconds).
GATEWAY_REFRESH_SECONDS = env_float("GATEWAY_REFRESH_SECONDS", 10.0, above=0)
# When Redis cannot be reached: "refuse" or "admit", separately for rate limits (rpm, tpm,
# concurrency) and for budgets (tokens and cost per day/month). Budgets refuse by default,
# because admitting there can spend money nobody approved.
when_redis_down = ("admit", "refuse")
GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN = env_choice(
    "GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN", when_redis_down, "admit"
)
GATEWAY_BUDGETS_WHEN_REDIS_DOWN = env_choice(
    "GATEWAY_BUDGETS_WHEN_REDIS_DOWN", when_redis_down, "refuse"
)
# A client that disconnects mid-stream: keep reading the engine's stream for up to this many
# seconds, so the engine's own final usage is recorded (exact); 0 aborts at once and records
# the tokens counted in the chunks received (an estimate).
GATEWAY_DISCONNECT_DRAIN_SECONDS = env_float("GATEWAY_DISCONNECT_DRAIN_SECONDS", 10.0, minimum=0)
# `/metrics` needs `Authorization: Bearer <this>` when set; unset, it answers only clients on
# loopback or private addresses (it names tenants, so it must not face the internet).
GATEWAY_METRICS_TOKEN = env_str("GATEWAY_METRICS_TOKEN", "")
# The gateway process's GIL switch interval (seconds): short, so background threads never hold
# the event loop up for long. 0 leaves Python's default (0.005).
GATEWAY_SWITCH_INTERVAL = env_float("GATEWAY_SWITCH_INTERVAL", 0.0005, minimum=0)

# --- Nodes: node agent API, scheduler (docs/nodes.md) -------------------------------------
# A node whose last heartbeat is older than this is marked lost and its workers rescheduled.
NODE_HEARTBEAT_TIMEOUT_SECONDS = env_int("NODE_HEARTBEAT_TIMEOUT_SECONDS", 45, minimum=1)
# How often agents heartbeat and reconcile; the control plane tells them at registration.
NODE_AGENT_INTERVAL_SECONDS = env_int("NODE_AGENT_INTERVAL_SECONDS", 5, minimum=1)
# Optional: an agent presenting this token may register a new node and receive its
# credential (once). Empty disables self-registration; use `manage.py createnode` instead.
NODE_BOOTSTRAP_TOKEN = env_str("NODE_BOOTSTRAP_TOKEN", "")
# Per-device overhead added to a replica's memory estimate (weights + KV cache): the CUDA
# context and activations on a GPU, the engine's own process memory on a CPU node.
SCHEDULER_MEMORY_OVERHEAD_BYTES = env_int("SCHEDULER_MEMORY_OVERHEAD_BYTES", 1 << 30, minimum=0)

# --- Metering: usage records --------------------------------------------------------------
# Flushed from the buffer to the database in batches of this size. With no separate Celery
# worker (eager mode), the gateway process flushes the buffer itself.
USAGE_FLUSH_BATCH_SIZE = env_int("USAGE_FLUSH_BATCH_SIZE", 500, minimum=1)
USAGE_FLUSH_IN_PROCESS = env_bool("USAGE_FLUSH_IN_PROCESS", CELERY_TASK_ALWAYS_EAGER)

# --- Logging ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO"),
    },
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
