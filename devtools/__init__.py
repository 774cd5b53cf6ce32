"""Helpers for the development tools: `scripts/up.py`, `bench/`, `reliability/` and the tests.

Each of them once wrote its own copy of these (progress output, waiting for a port or an HTTP
answer, stopping a process group, spawning a vLLM engine, percentiles); they now call these.

Standard library only, and no Django import at module level: `make up` runs on the base
install (no httpx), and the benches and the reliability runner import these before they
configure Django.

- `progress`: `say`, `wait_until`;
- `net`: `port_open`, `free_port`, `wait_for_port`, `wait_http`;
- `processes`: `spawn` (in a session of its own, output to a log), `stop` (the whole group,
  SIGTERM then SIGKILL), `group_members`, `cmdline`;
- `commands`: the command lines of granian serving the control plane, a Celery worker with
  beat, and a node agent;
- `engine`: the vLLM engine of the tests and benches, with the CPU flags in one constant;
- `stats`: `percentile`.
"""
