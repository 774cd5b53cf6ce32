from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from nodes.models import Node, NodeState

logger = logging.getLogger(__name__)


@shared_task
def mark_lost_nodes() -> list[str]:
    """Mark nodes whose last heartbeat is older than NODE_HEARTBEAT_TIMEOUT_SECONDS as lost,
    then reschedule their workers elsewhere."""
    cutoff = timezone.now() - timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_SECONDS)
    stale = Node.objects.exclude(state=NodeState.LOST).filter(last_heartbeat_at__lt=cutoff)
    names = list(stale.values_list("name", flat=True))
    if names:
        # Conditional update: a heartbeat that lands meanwhile keeps its node out of this.
        Node.objects.filter(name__in=names, last_heartbeat_at__lt=cutoff).exclude(
            state=NodeState.LOST
        ).update(
            state=NodeState.LOST,
            state_reason=f"no heartbeat for over {settings.NODE_HEARTBEAT_TIMEOUT_SECONDS}s",
        )
        logger.warning("nodes marked lost (no heartbeat since %s): %s", cutoff.isoformat(), names)
        schedule_deployments()
    return names


@shared_task
def schedule_deployments() -> dict[str, Any]:
    """Place missing replicas, drain extra ones, replace workers of lost nodes."""
    from nodes.scheduler import schedule

    report = schedule()
    return {
        "created": report.created,
        "drained": report.drained,
        "stopped": report.stopped,
        "unschedulable": report.unschedulable,
    }
