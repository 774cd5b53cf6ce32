"""`make up`: the whole stack on this machine, in the foreground; Ctrl-C stops all of it.

Migrates a SQLite database (unless DATABASE_URL says otherwise), creates an admin user,
builds the tiny model, registers the engine runtime and the built-in models, serves the
control plane with granian (Celery tasks run eagerly, in-process), starts a local node agent,
deploys the tiny model, waits for its worker with progress output, creates a demo tenant and
key, prints how to call it and writes var/demo.env for scripts.

    .venv/bin/python scripts/up.py [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import processes  # noqa: E402
from devtools.commands import agent_command, granian_command  # noqa: E402
from devtools.net import wait_http  # noqa: E402
from devtools.processes import spawn  # noqa: E402
from devtools.progress import say  # noqa: E402

PYTHON = sys.executable
NODE_NAME = "local"
MODEL = "tiny-llama"


def manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        check=False,
        text=True,
        capture_output=capture,
    )
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"manage.py {' '.join(args)} failed (exit {result.returncode})")
    return result.stdout if capture else ""


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()


def node_credential(var_dir: Path) -> str:
    """The local node's credential: kept in var/ (0600) since it is shown only once."""
    from nodes.models import Node

    saved = var_dir / "agent" / "credential"
    if saved.exists() and Node.objects.filter(name=NODE_NAME).exists():
        return saved.read_text().strip()
    exists = Node.objects.filter(name=NODE_NAME).exists()
    args = ["createnode", NODE_NAME, "--address", "127.0.0.1", "--quiet"]
    credential = manage(*(args + (["--rotate"] if exists else [])), capture=True).strip()
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(credential + "\n")
    saved.chmod(0o600)
    return credential


def wait_registered(agent: subprocess.Popen[bytes], timeout: float = 60) -> None:
    from nodes.models import Node

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise SystemExit(f"the node agent exited (code {agent.returncode}); see var/agent.log")
        if Node.objects.filter(name=NODE_NAME, gpus__isnull=False).exists():
            return
        time.sleep(0.5)
    raise SystemExit(f"the node agent did not register within {timeout:.0f}s")


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def deploy() -> Any:
    from models_registry.models import ModelVersion
    from nodes.models import Deployment

    version = ModelVersion.objects.get(model__name=MODEL, label="builtin")
    deployment, created = Deployment.objects.get_or_create(
        name=MODEL, defaults={"model_version": version, "replicas": 1}
    )
    if not created and (deployment.replicas < 1 or deployment.desired_state != "running"):
        deployment.replicas, deployment.desired_state = max(deployment.replicas, 1), "running"
        deployment.save()
    from nodes.tasks import schedule_deployments

    schedule_deployments()  # eager mode runs it on save too; this also covers a re-run
    return deployment


def wait_ready(deployment: Any, agent: subprocess.Popen[bytes], timeout: float) -> Any:
    from nodes.models import Worker

    deadline = time.monotonic() + timeout
    last = ""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise SystemExit(f"the node agent exited (code {agent.returncode}); see var/agent.log")
        deployment.refresh_from_db()
        worker = Worker.objects.filter(deployment=deployment).exclude(state="stopped").first()
        if worker is None:
            line = deployment.unschedulable_reason or "waiting for the scheduler"
        else:
            line = f"worker {worker.pk} on {worker.node}: {worker.state}"
            if worker.state_reason:
                line += f" ({worker.state_reason})"
            if worker.state == "ready":
                say(f"{line} after {time.monotonic() - started:.0f}s")
                return worker
            if worker.state == "crash_looping":
                print(worker.log_tail[-3000:])
                raise SystemExit(f"the worker is crash-looping: {worker.state_reason}")
        if line != last:
            say(line)
            last = line
        else:
            print(".", end="", flush=True)
        time.sleep(2)
    raise SystemExit(f"the worker was not ready within {timeout:.0f}s")


def demo_key() -> str:
    from controlplane import audit
    from models_registry.models import Model, ModelGrant
    from tenants import services
    from tenants.models import ApiKey, Tenant

    tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
    ModelGrant.objects.get_or_create(tenant=tenant, model=Model.objects.get(name=MODEL))
    # A key is shown once: each run revokes the previous demo key and issues a fresh one.
    for old in ApiKey.objects.filter(tenant=tenant, name="demo", revoked_at__isnull=True):
        services.revoke_key(old, origin=audit.CLI)
    _, plaintext = ApiKey.issue(tenant=tenant, name="demo")
    return plaintext


def stop(process: subprocess.Popen[bytes] | None, name: str, timeout: float = 30) -> None:
    if process is not None and process.poll() is None:
        say(f"stopping {name}")
        processes.stop(process, timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the whole stack here.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--port-range", default="8100-8199", help="ports for vLLM workers")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for ready")
    args = parser.parse_args()
    # Ctrl-C, and a plain `kill`, unwind through the finally below (even where SIGINT was
    # ignored by whoever started us, as shells do for background jobs).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    os.environ.setdefault("DEBUG", "1")
    # No Redis here: tasks run in the process that triggers them (granian's, or this one).
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
    setup_django()
    from django.conf import settings

    var_dir = Path(settings.VAR_DIR)
    url = f"http://{args.host}:{args.port}"

    say("migrating the database")
    manage("migrate", "--noinput", "-v", "0")
    manage("ensure_admin")
    say("building the tiny model (skipped when built)")
    manage("build_tiny_model")
    say("registering the engine runtime and the built-in models")
    manage("register_runtime", "--cpu")
    manage("register_builtin_models")
    credential = node_credential(var_dir)

    server = agent = None
    try:
        say(f"serving the control plane on {url}")
        server = spawn(granian_command(args.port, args.host), var_dir / "server.log", cwd=ROOT)
        try:
            # Any answer will do (401 without a node credential): the server is up.
            wait_http(url + "/api/agent/v1/workers", 60, process=server, any_status=True)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"the control plane did not start: {exc}; see var/server.log") from exc

        say(f"starting the node agent (log: {var_dir / 'agent.log'})")
        agent = spawn(
            agent_command(url, NODE_NAME, args.port_range, ["--stop-workers-on-exit"]),
            var_dir / "agent.log",
            env={**os.environ, "NODE_CREDENTIAL": credential},
            cwd=ROOT,
        )
        wait_registered(agent)
        say(f"deploying {MODEL}; the engine takes 20-60 s to start")
        worker = wait_ready(deploy(), agent, args.timeout)
        key = demo_key()
        (var_dir / "demo.env").write_text(
            f"CONTROLPLANE_URL={url}\nDEMO_API_KEY={key}\nDEMO_MODEL={MODEL}\n"
        )
        (var_dir / "demo.env").chmod(0o600)
        password_file = var_dir / "admin-password.txt"
        print(
            f"""
The stack is up.
  dashboard:  {url}/   (admin; password in {password_file})
  API docs:   {url}/api/docs/
  worker:     {worker.node}:{worker.port} (engine key known only to the gateway and the agent)
  demo key:   written to {var_dir / "demo.env"} (CONTROLPLANE_URL, DEMO_API_KEY, DEMO_MODEL)

Try it:
  set -a; source {var_dir / "demo.env"}; set +a
  curl -s $CONTROLPLANE_URL/v1/chat/completions -H "Authorization: Bearer $DEMO_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "'$DEMO_MODEL'", "messages": [{{"role": "user", "content": "hello"}}]}}'

  python - <<'PY'
import os, openai
client = openai.OpenAI(
    base_url=os.environ["CONTROLPLANE_URL"] + "/v1", api_key=os.environ["DEMO_API_KEY"]
)
reply = client.chat.completions.create(
    model=os.environ["DEMO_MODEL"], messages=[{{"role": "user", "content": "hello"}}]
)
print(reply.choices[0].message.content)
PY

Ctrl-C stops everything, workers included.""",
            flush=True,
        )
        while server.poll() is None and agent.poll() is None:
            time.sleep(1)
        say("a component exited; shutting down")
        return 1
    except KeyboardInterrupt:
        print()
        return 0
    finally:
        # The agent stops its workers (SIGTERM to each engine's group, then SIGKILL).
        stop(agent, "the node agent and its workers", timeout=60)
        stop(server, "the control plane")


if __name__ == "__main__":
    sys.exit(main())
