"""The agent's HTTP client for the control plane's agent API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from nodes.agent.protocol import Assignment, Report


class ControlPlaneError(Exception):
    """The control plane answered with an error status (status 0: it could not be reached)."""

    def __init__(self, status: int, body: Any, message: str) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class ControlPlaneClient:
    def __init__(self, base_url: str, credential: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") + "/api/agent/v1/"
        self.credential = credential
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.credential}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")[:500]
            raise ControlPlaneError(
                exc.code, parsed, f"{method} {path}: HTTP {exc.code}: {parsed}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ControlPlaneError(0, None, f"{method} {path}: {exc}") from None
        return json.loads(raw) if raw else None

    def register(self, info: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "register", info)
        return result

    def heartbeat(self, devices: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "heartbeat", {"devices": devices})
        return result

    def assignments(self) -> list[Assignment]:
        feed: list[dict[str, Any]] = self._request("GET", "workers")["workers"]
        return [Assignment.from_json(entry) for entry in feed]

    def transition(self, worker_id: int, report: Report) -> dict[str, Any]:
        path = f"workers/{worker_id}/transition"
        result: dict[str, Any] = self._request("POST", path, report.to_json())
        return result

    def upload_log(self, worker_id: int, tail: str) -> None:
        self._request("POST", f"workers/{worker_id}/logs", {"tail": tail})
