"""The periodic task that marks silent nodes lost: run through Celery in-process, and once
through a real Celery worker over Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from controlplane.celery import app
from nodes.models import Node, NodeState
from nodes.tasks import BLIND_UNTIL_KEY, mark_lost_nodes
from tests import factories

pytestmark = pytest.mark.django_db


def ago(seconds: float) -> object:
    return timezone.now() - timedelta(seconds=seconds)


def test_a_node_with_an_old_heartbeat_becomes_lost_and_a_fresh_one_stays_ready() -> None:
    timeout = settings.NODE_HEARTBEAT_TIMEOUT_SECONDS
    stale = factories.node(name="stale", last_heartbeat_at=ago(timeout + 30))
    fresh = factories.node(name="fresh", last_heartbeat_at=ago(1))
    result = mark_lost_nodes.apply()
    assert result.get(timeout=10) == ["stale"]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == NodeState.LOST
    assert str(timeout) in stale.state_reason
    assert fresh.state == NodeState.READY


def test_a_cordoned_node_that_goes_silent_is_lost_too_and_lost_ones_are_left_alone() -> None:
    timeout = settings.NODE_HEARTBEAT_TIMEOUT_SECONDS
    cordoned = factories.node(state=NodeState.CORDONED, last_heartbeat_at=ago(timeout * 3))
    already = factories.node(
        state=NodeState.LOST, state_reason="old reason", last_heartbeat_at=ago(timeout * 3)
    )
    assert mark_lost_nodes.apply().get(timeout=10) == [cordoned.name]
    already.refresh_from_db()
    assert already.state_reason == "old reason"


def test_a_node_that_never_sent_a_heartbeat_is_not_marked_lost() -> None:
    # Registered by a platform admin, its agent not started yet: nothing to time out from.
    waiting = factories.node(last_heartbeat_at=None)
    assert mark_lost_nodes.apply().get(timeout=10) == []
    assert Node.objects.get(pk=waiting.pk).state == NodeState.READY


@pytest.fixture
def no_outage_mark() -> Iterator[None]:
    """The mark lives in the shared cache (Redis in CI): never leave it to other tests."""
    cache.delete(BLIND_UNTIL_KEY)
    yield
    cache.delete(BLIND_UNTIL_KEY)


def test_when_every_node_is_silent_at_once_none_is_marked_lost(no_outage_mark: None) -> None:
    """After a database outage no heartbeat could be written: that is not a dead fleet."""
    timeout = settings.NODE_HEARTBEAT_TIMEOUT_SECONDS
    nodes = [factories.node(name=f"n{i}", last_heartbeat_at=ago(timeout + 5)) for i in range(3)]
    assert mark_lost_nodes.apply().get(timeout=10) == []
    assert {n.state for n in Node.objects.filter(pk__in=[n.pk for n in nodes])} == {NodeState.READY}
    # One heartbeat resumes; the others get a whole timeout to follow before they are judged.
    Node.objects.filter(pk=nodes[0].pk).update(last_heartbeat_at=ago(1))
    assert mark_lost_nodes.apply().get(timeout=10) == []
    cache.set(BLIND_UNTIL_KEY, time.time() - 1)  # ... and once it has passed:
    assert sorted(mark_lost_nodes.apply().get(timeout=10)) == ["n1", "n2"]


def test_the_task_is_on_the_beat_schedule_and_registered() -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE["mark-lost-nodes"]
    assert schedule["task"] == "nodes.tasks.mark_lost_nodes"
    app.loader.import_default_modules()
    assert "nodes.tasks.mark_lost_nodes" in app.tasks


@pytest.fixture
def celery_worker_over_redis(tmp_path: Path) -> Iterator[str]:
    """A real `celery worker` process on its own queue, using the test database."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: a real worker needs a real broker (CI sets it)")
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL (PostgreSQL): the worker process shares the test database")
    queue = f"test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    root = Path(__file__).resolve().parent.parent
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=root,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield queue
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_marks_the_stale_node_lost_through_redis(
    celery_worker_over_redis: str, tmp_path: Path
) -> None:
    stale = factories.node(
        name="stale", last_heartbeat_at=ago(settings.NODE_HEARTBEAT_TIMEOUT_SECONDS + 30)
    )
    fresh = factories.node(name="fresh", last_heartbeat_at=ago(1))
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False  # send it to the broker even where tests run eagerly
    try:
        mark_lost_nodes.apply_async(queue=celery_worker_over_redis)
    finally:
        app.conf.task_always_eager = eager
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stale.refresh_from_db()
        if stale.state == NodeState.LOST:
            break
        time.sleep(0.2)
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert stale.state == NodeState.LOST, log_text[-2000:]
    fresh.refresh_from_db()
    assert fresh.state == NodeState.READY
