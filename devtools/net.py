"""Ports and HTTP readiness, with the standard library only (`make up` has no httpx)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on the port now."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(first: int, last: int, host: str = HOST) -> int:
    """The first port of first..last that nobody holds (bound and released, so a race with
    another process is possible: callers own their range by convention)."""
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


def wait_for_port(port: int, timeout: float, host: str = HOST) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout:.0f}s")


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> int:
    """The status of a GET, an error status included; OSError when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own servers
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def wait_http(
    url: str,
    timeout: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    headers: dict[str, str] | None = None,
    any_status: bool = False,
    log: Path | None = None,
) -> None:
    """Wait until `url` answers 200 (any status with `any_status`: the server is up even when
    it refuses us). RuntimeError at once if `process` exits first (with the end of `log`),
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{url}: the process exited ({process.returncode}) {tail}".strip())
        try:
            if http_status(url, headers) == 200 or any_status:
                return
        except OSError:
            pass
        time.sleep(0.5)
    where = f"; see {log}" if log else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s{where}")
