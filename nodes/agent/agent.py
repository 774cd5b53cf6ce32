"""The reconcile loop: register, then heartbeat, pull assignments and reconcile, forever."""

from __future__ import annotations

import logging
import threading
from typing import Any

from nodes.agent import AGENT_VERSION, discovery
from nodes.agent.client import ControlPlaneClient, ControlPlaneError
from nodes.agent.supervisor import Supervisor, SupervisorSettings

logger = logging.getLogger("nodes.agent")


class Agent:
    def __init__(
        self,
        *,
        client: ControlPlaneClient,
        name: str,
        address: str,
        settings: SupervisorSettings,
        interval: float | None = None,
        force_cpu: bool = False,
    ) -> None:
        self.client = client
        self.name = name
        self.address = address
        self.interval_override = interval
        self.interval = interval or 5.0
        self.force_cpu = force_cpu
        self.supervisor = Supervisor(settings=settings, client=client)
        self.devices: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def register(self) -> None:
        facts = discovery.discover(self.name, force_cpu=self.force_cpu)
        self.devices = facts["devices"]
        answer = self.client.register(
            {
                "name": self.name,
                "address": self.address,
                "agent_version": AGENT_VERSION,
                "cpu_count": facts["cpu_count"],
                "memory_bytes": facts["memory_bytes"],
                "devices": self.devices,
            }
        )
        if self.interval_override is None:
            self.interval = float(answer.get("interval_seconds", self.interval))
        kinds = sorted({d["kind"] for d in self.devices})
        logger.info(
            "registered node %s (%s, %d device(s): %s), state %s",
            self.name,
            self.address,
            len(self.devices),
            ", ".join(kinds),
            answer["node"]["state"],
        )

    def tick(self) -> None:
        usage = discovery.device_usage(self.devices, self.name)
        self.client.heartbeat(usage)
        self.supervisor.reconcile(self.client.assignments())

    def run(self, stop_workers_on_exit: bool = False) -> None:
        adopted = self.supervisor.adopt()
        if adopted:
            logger.info("re-adopted running workers: %s", adopted)
        while not self.stopping.is_set():
            try:
                self.register()
                break
            except ControlPlaneError as exc:
                if exc.status in (400, 401, 403, 409):
                    raise
                logger.warning("control plane unreachable (%s); retrying", exc)
                self.stopping.wait(min(self.interval, 5.0))
        try:
            while not self.stopping.is_set():
                try:
                    self.tick()
                except ControlPlaneError as exc:
                    # Keep engines running through a control-plane outage; retry next round.
                    logger.warning("reconcile round failed: %s", exc)
                except Exception:
                    logger.exception("reconcile round failed unexpectedly")
                self.stopping.wait(self.interval)
        finally:
            if stop_workers_on_exit:
                logger.info("stopping all workers before exiting")
                self.supervisor.stop_all(report=True)
            else:
                self.supervisor.save_state()
                logger.info(
                    "agent exiting; %d worker(s) keep running and will be re-adopted",
                    len(self.supervisor.running),
                )
