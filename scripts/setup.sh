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
# The viewer's browser tests drive the system's Chromium through playwright (playwright's own
# browser download needs more than a package registry). Install it with apt when it is missing.
have_chromium() {
    [ -n "${EG3D_INVERT_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || command -v google-chrome >/dev/null 2>&1
}
if ! have_chromium; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
        echo "installing Chromium with apt-get (for the viewer's browser tests)"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
            || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } \
            || echo "warning: could not install Chromium; the browser tests will fail until it is there" \
                    "(sudo apt-get install chromium, or set EG3D_INVERT_CHROMIUM)" >&2
    else
        echo "warning: no Chromium and no apt-get: install Chromium or Chrome (or set EG3D_INVERT_CHROMIUM)" \
             "for the viewer's browser tests" >&2
    fi
fi
.venv/bin/python -c "import eg3d_invert, torch; print('eg3d-invert', eg3d_invert.__version__, 'with torch', torch.__version__)"
