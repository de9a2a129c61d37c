#!/usr/bin/env bash
# Create .venv at the repository root and install eg3d-invert with everything it needs.
# Usage: bash scripts/setup.sh        (re-running it is safe; it reuses an existing .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# [ray]: the optional Ray engine (--engine ray), installed here so that the test suite covers it.
.venv/bin/python -m pip install --quiet -e '.[test,ray]'
# Packages whose declared pins are stale or drag in conflicting builds: exact versions from pyproject.toml.
mapfile -t NODEPS < <(.venv/bin/python - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["tool"]["eg3d-invert"]["no-deps-requirements"]))
PY
)
.venv/bin/python -m pip install --quiet --no-deps "${NODEPS[@]}"
.venv/bin/python -c "import eg3d_invert, torch; print('eg3d-invert', eg3d_invert.__version__, 'with torch', torch.__version__)"
