"""Print the pinned dependencies from pyproject.toml, one per line, for pip.

The project runs from its checkout (not installed into the virtualenv), so several checkouts
can share one environment; this installs only what it depends on.
Usage: python scripts/deps.py [extra ...]
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[1:]:
    wanted += project["optional-dependencies"][extra]
print("\n".join(wanted))
