"""Progress output and waiting with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def say(message: str) -> None:
    """One line of progress, time-stamped and flushed at once (the output is often a log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Call `check` until it returns something true, and return that; TimeoutError naming
    `what` after `timeout` seconds. An exception from `check` counts as "not yet": a part still
    starting (or restarting) is not a failure yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
