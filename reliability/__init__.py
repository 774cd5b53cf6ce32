"""`make reliability`: fault scenarios against the real stack on this machine, with a report.

- `stack.py` starts the stack in processes of its own (its own PostgreSQL cluster and Redis
  server, so they can be restarted without touching the machine's; the control plane's API;
  two gateway processes; a Celery worker; two node agents as two nodes, each with a real vLLM
  worker of the tiny model);
- `load.py` drives it through both gateways as products would, recording what every client saw;
- `scenarios.py` injects one fault each under that load and checks the guarantees;
- `__main__.py` runs them and prints the table (`python -m reliability --help`).

docs/reliability.md describes each scenario, its guarantees and the latest figures.
"""
