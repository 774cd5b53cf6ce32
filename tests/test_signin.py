"""Sign-in rate limiting (controlplane/signin.py), through real requests to the sign-in pages
and the real cache (Redis when REDIS_URL is set, as in CI)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from controlplane.signin import SignInGuard

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-correct-horse-battery"
ADDRESS = "203.0.113.7"  # each test's client comes from here (TEST-NET-3)
OTHER_ADDRESS = "198.51.100.9"
USERNAMES = ["carol", "Carol", "nobody-by-this-name", "dave", "erin", "staffer"]


class FakeRequest:
    def __init__(self, address: str) -> None:
        self.META = {"REMOTE_ADDR": address}


def forget_counters() -> None:
    for address in (ADDRESS, OTHER_ADDRESS):
        for username in [*USERNAMES, ""]:
            SignInGuard(FakeRequest(address), username).reset()  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def limits(settings: Any) -> Iterator[None]:
    settings.LOGIN_FAILURES_PER_USERNAME = 5
    settings.LOGIN_FAILURES_PER_IP = 20
    # A long window, so that no test runs across a window's end (counts restart there).
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 10 * 86400
    forget_counters()  # the cache is Redis, shared with earlier runs: start from nothing
    yield
    forget_counters()


@pytest.fixture
def carol(db: None) -> Any:
    return get_user_model().objects.create_user(username="carol", password=PASSWORD)


def sign_in(client: Client, username: str, password: str, url: str = "/accounts/login/") -> Any:
    return client.post(url, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_cache_is_redis_when_redis_is_configured() -> None:
    # Several processes serve the control plane: counts kept in one process's memory would
    # multiply the attempts an attacker gets by the number of processes.
    backend = django_settings.CACHES["default"]["BACKEND"]
    if django_settings.REDIS_URL:
        assert backend == "django.core.cache.backends.redis.RedisCache"
        cache.set("signin-probe", 1, 5)
        assert cache.get("signin-probe") == 1
    else:
        assert backend == "django.core.cache.backends.locmem.LocMemCache"


def test_after_five_failures_even_the_right_password_is_refused_with_429(carol: Any) -> None:
    client = Client(REMOTE_ADDR=ADDRESS)
    for _ in range(5):
        response = sign_in(client, "carol", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    response = sign_in(client, "carol", PASSWORD)
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 10 * 86400
    page = response.content.decode()
    assert "Too many failed sign-in attempts" in page and "minutes, then try again" in page
    assert not signed_in(client)
    # Another client, another address: the username itself is locked.
    assert sign_in(Client(REMOTE_ADDR=OTHER_ADDRESS), "carol", PASSWORD).status_code == 429


def test_the_lock_reads_the_same_whether_or_not_the_username_exists(carol: Any) -> None:
    answers = []
    for username in ("carol", "nobody-by-this-name"):
        client = Client(REMOTE_ADDR=ADDRESS)
        for _ in range(5):
            assert sign_in(client, username, "wrong").status_code == 200
        locked = sign_in(client, username, "wrong")
        assert locked.status_code == 429
        answers.append(locked.content.decode().replace(username, "NAME"))
    # The pages differ only in their CSRF tokens (64 characters, in the form and in hx-headers).
    first, second = (re.sub(r"[A-Za-z0-9]{64}", "TOKEN", page) for page in answers)
    assert first == second


def test_a_successful_sign_in_clears_the_usernames_failures(carol: Any) -> None:
    client = Client(REMOTE_ADDR=ADDRESS)
    for _ in range(4):
        assert sign_in(client, "carol", "wrong").status_code == 200
    assert sign_in(client, "carol", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):  # four more: had the count not been cleared, the first would be refused
        assert sign_in(client, "carol", "wrong").status_code == 200
    assert sign_in(client, "carol", PASSWORD).status_code == 302


def test_the_username_count_ignores_case(carol: Any) -> None:
    client = Client(REMOTE_ADDR=ADDRESS)
    for _ in range(5):
        sign_in(client, "Carol", "wrong")
    assert sign_in(client, "carol", PASSWORD).status_code == 429


def test_one_address_guessing_many_usernames_is_locked(settings: Any, db: None) -> None:
    settings.LOGIN_FAILURES_PER_IP = 6
    get_user_model().objects.create_user(username="erin", password=PASSWORD)
    client = Client(REMOTE_ADDR=ADDRESS)
    for username in ("dave", "dave", "dave", "carol", "carol", "nobody-by-this-name"):
        assert sign_in(client, username, "wrong").status_code == 200
    # erin never failed, but her sign-in comes from the guessing address.
    assert sign_in(client, "erin", PASSWORD).status_code == 429
    assert sign_in(Client(REMOTE_ADDR=OTHER_ADDRESS), "erin", PASSWORD).status_code == 302


def test_the_admin_sign_in_is_limited_too(db: None) -> None:
    get_user_model().objects.create_superuser(username="staffer", password=PASSWORD)
    client = Client(REMOTE_ADDR=ADDRESS)
    for _ in range(5):
        response = sign_in(client, "staffer", "wrong", url="/admin/login/")
        assert response.status_code == 200 and "Django site admin" in response.text
    response = sign_in(client, "staffer", PASSWORD, url="/admin/login/")
    assert response.status_code == 429 and "Too many failed sign-in attempts" in response.text
    assert not signed_in(client)


def test_the_lock_ends_with_its_window(settings: Any, carol: Any) -> None:
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 4
    # Start at the beginning of a window, so that the failures all fall into it.
    time.sleep(4 - time.time() % 4 + 0.05)
    client = Client(REMOTE_ADDR=ADDRESS)
    for _ in range(5):
        sign_in(client, "carol", "wrong")
    locked = sign_in(client, "carol", PASSWORD)
    assert locked.status_code == 429 and int(locked["Retry-After"]) <= 4
    time.sleep(int(locked["Retry-After"]) + 0.1)
    assert sign_in(client, "carol", PASSWORD).status_code == 302
