from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from nodes.models import Node, NodeState

logger = logging.getLogger(__name__)

# Set when every node went silent at once (see mark_lost_nodes); shared through the cache.
BLIND_UNTIL_KEY = "nodes:heartbeats-blind-until"


@shared_task
def mark_lost_nodes() -> list[str]:
    """Mark nodes whose last heartbeat is older than NODE_HEARTBEAT_TIMEOUT_SECONDS as lost,
    then reschedule their workers elsewhere."""
    now = timezone.now()
    timeout = settings.NODE_HEARTBEAT_TIMEOUT_SECONDS
    cutoff = now - timedelta(seconds=timeout)
    watched = Node.objects.exclude(state=NodeState.LOST).filter(last_heartbeat_at__isnull=False)
    stale = watched.filter(last_heartbeat_at__lt=cutoff)
    names = list(stale.values_list("name", flat=True))
    if len(names) >= 2 and not watched.filter(last_heartbeat_at__gte=cutoff).exists():
        # Every node silent at once: far likelier that the control plane could not record
        # heartbeats (its database or network was down) than that the whole fleet died.
        # Marking them lost would stop every worker. Give every node a whole timeout, from
        # now, to heartbeat again before any is judged.
        cache.set(BLIND_UNTIL_KEY, (now + timedelta(seconds=timeout)).timestamp(), timeout * 2)
        logger.error(
            "no node has heartbeated since %s (%d nodes): suspecting the control plane's own "
            "outage; none is marked lost for the next %ss",
            cutoff.isoformat(),
            len(names),
            timeout,
        )
        return []
    blind_until = cache.get(BLIND_UNTIL_KEY)
    if names and blind_until is not None and now.timestamp() < blind_until:
        logger.warning("heartbeats resumed after an outage; judging nodes again shortly")
        return []
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
