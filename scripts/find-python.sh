#!/usr/bin/env bash
# Print the path of a python of the wanted minor version (e.g. 3.12), or fail with a message.
# pyenv's shims answer `python3.12` only when that version is selected, so look behind them.
set -euo pipefail
want=${1:?usage: find-python.sh 3.12}
for candidate in "python$want" "/usr/bin/python$want" "/usr/local/bin/python$want"; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys' >/dev/null 2>&1; then
    command -v "$candidate"; exit 0
  fi
done
for root in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want"*; do
  if [ -x "$root/bin/python$want" ]; then echo "$root/bin/python$want"; exit 0; fi
done
echo "find-python.sh: no Python $want found; install it (e.g. apt-get install python$want python$want-venv)" >&2
exit 1
