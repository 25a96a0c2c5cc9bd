#!/usr/bin/env bash
# The one command that sets up and runs the whole test suite on a fresh Debian machine:
#   bash scripts/test.sh [pytest arguments...]      e.g. bash scripts/test.sh tests/browser
# 1. Debian's Chromium for the browser tests (apt-get, only when /usr/bin/chromium is missing;
#    never `playwright install`: browsers cannot be downloaded here).
# 2. .venv with the package and its test extras.
# 3. ruff (lint and format, configured in pyproject.toml), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

install_chromium() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "scripts/test.sh: /usr/bin/chromium is missing and this is not root (no sudo):" \
                 "install it with 'apt-get install -y chromium fonts-liberation';" \
                 "browser tests will skip (or fail when CI=true)." >&2
            return 0
        fi
        # Ask for a password only when someone can type it.
        if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: /usr/bin/chromium is missing and apt-get is not available;" \
             "browser tests will skip (or fail when CI=true)." >&2
        return 0
    fi
    echo "scripts/test.sh: installing chromium and fonts-liberation with apt-get..." >&2
    local log
    log="$(mktemp)"
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
        && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation >>"$log" 2>&1; then
        rm -f "$log"
    else
        tail -n 20 "$log" >&2
        rm -f "$log"
        echo "scripts/test.sh: could not install chromium; browser tests will skip (or fail when CI=true)." >&2
    fi
}

if [ ! -x /usr/bin/chromium ]; then
    install_chromium
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -e ".[test]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
