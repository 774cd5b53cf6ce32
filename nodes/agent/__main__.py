"""``python -m nodes.agent``: the node agent, without Django (see nodes/agent/cli.py)."""

import sys

from nodes.agent.cli import main

sys.exit(main())
