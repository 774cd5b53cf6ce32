from __future__ import annotations

from celery import shared_task

from metering import buffer as metering


@shared_task
def flush_usage() -> int:
    """Move buffered usage events into UsageRecords (beat: every 2 s, see settings)."""
    return metering.flush_usage()
