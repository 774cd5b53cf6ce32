"""Run the scheduler whenever deployments or nodes change, once the change is committed."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

logger = logging.getLogger(__name__)

# Node fields whose change can alter placement; heartbeats and usage reports touch others.
PLACEMENT_FIELDS = {"state", "labels"}


def request_scheduling() -> None:
    """Schedule after commit, so the run sees the change (and a rollback schedules nothing)."""
    transaction.on_commit(_enqueue)


def _enqueue() -> None:
    from nodes.tasks import schedule_deployments

    try:
        schedule_deployments.delay()
    except Exception:
        # The periodic run catches up; a broker hiccup must not fail the user's save.
        logger.exception("could not enqueue the scheduler")


def _deployment_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    request_scheduling()


def _node_changed(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and not (set(update_fields) & PLACEMENT_FIELDS):
        return
    request_scheduling()


def connect() -> None:
    from nodes.models import Deployment, Node

    post_save.connect(_deployment_changed, sender=Deployment, dispatch_uid="schedule-deployment")
    post_delete.connect(_deployment_changed, sender=Deployment, dispatch_uid="schedule-dep-del")
    post_save.connect(_node_changed, sender=Node, dispatch_uid="schedule-node")
    post_delete.connect(_node_changed, sender=Node, dispatch_uid="schedule-node-delete")
