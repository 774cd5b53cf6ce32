"""Browser tests: pytest-playwright driving Debian's chromium (Playwright cannot download its
own browsers here; `make browser` installs chromium) against pytest-django's live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.net import free_port

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Tests write their screenshots under var/, so `make test` leaves the checkout clean;
# `make screenshots` points this at docs/screenshots/ to refresh the documented ones.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "var" / "screenshots")
if not SCREENSHOTS.is_absolute():
    SCREENSHOTS = ROOT / SCREENSHOTS


# The dashboard's tests own ports 8300-8399; the live server takes the first one nobody holds.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", f"127.0.0.1:{free_port(8300, 8399)}")


def is_browser_test(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).is_relative_to(Path(__file__).parent)


@pytest.hookimpl(trylast=True)  # after pytest-django's own reordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Last, because once Playwright has started, its event loop runs for the rest of the session.
    items.sort(key=is_browser_test)  # stable: every other test keeps its order
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(
        reason=f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    )
    for item in items:
        if is_browser_test(item):
            item.add_marker(skip)


@pytest.fixture(scope="package", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API leaves an event loop running in this thread (for the rest of the
    session), so Django's async guard would refuse these tests' plain synchronous ORM calls.
    Allow them for this package only; the rest of the suite keeps the guard, since the browser
    tests run last (see pytest_collection_modifyitems) and Playwright stops before the
    session's database teardown."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "headless": True,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_context_args,
        "viewport": {"width": 1440, "height": 900},
        "accept_downloads": True,
    }


@pytest.fixture(autouse=True)
def _no_persistent_db_connections(live_server: Any) -> None:
    """The live server answers each request in a thread of its own; a connection kept open
    there (CONN_MAX_AGE) outlives the thread and blocks dropping the test database."""
    from django.db import connections

    for connection in connections.all():
        connection.settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _drop_stray_test_db_sessions(django_db_setup: None, django_db_blocker: Any) -> Any:
    """After the live server, PostgreSQL can still hold one idle session on the test database
    (left by a request thread), and dropping the test database then fails with "being accessed
    by other users". End such sessions of the test database only, before it is dropped."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.close()
