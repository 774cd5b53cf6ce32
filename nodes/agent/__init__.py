"""The node agent: runs on every GPU host, talks to the control plane only over HTTP.

Nothing in this package imports Django models or touches the database: the agent's truth
about what to run comes from the control plane's agent API, and its truth about what runs
from the processes themselves (and its state file, for re-adoption after a restart).
"""

AGENT_VERSION = "0.1.0"
