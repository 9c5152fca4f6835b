#!/usr/bin/env bash
# The two Quick start commands:
#   ./dev.sh run    set up a virtualenv, install Chronos, run it on the embedded Redis Stack
#   ./dev.sh test   set up the same virtualenv with the test tools, run lint and the whole suite
# Extra arguments go to `chronos serve` (run) or to pytest (test).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-}
VENV=${VENV:-.venv}

find_python() {
    if [ -n "$PYTHON" ]; then echo "$PYTHON"; return; fi
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    echo "Chronos needs Python 3.11 or newer; none was found on PATH (set PYTHON=...)." >&2
    exit 1
}

ensure_venv() {
    local py stamp="$VENV/.installed-$1"
    if [ -f "$stamp" ] && [ "$stamp" -nt setup.cfg ] && [ "$stamp" -nt pyproject.toml ] &&
        [ "$stamp" -nt sdk/pyproject.toml ]; then
        return
    fi
    py=$(find_python)
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            # Debian and Ubuntu ship venv separately from python3.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "installing python3-venv (Debian/Ubuntu keep venv in its own package)"
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
                "$py" -m venv "$VENV"
            else
                echo "$py cannot create a virtualenv: run 'sudo apt-get install python3-venv'" >&2
                exit 1
            fi
        fi
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ "$1" = test ]; then
        # The SDK is its own distribution (sdk/); the tests drive it against the server.
        "$VENV/bin/python" -m pip install --quiet -e '.[test]' -e ./sdk
    else
        "$VENV/bin/python" -m pip install --quiet -e .
    fi
    touch "$stamp"
}

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; without it they
# fail (never skip), so install it when we can.
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium for the browser tests"
        if ! { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
            echo "could not install chromium: the browser tests will fail" >&2
        fi
    else
        echo "the browser tests need Chromium at /usr/bin/chromium and will fail without it:" \
            "run 'sudo apt-get install chromium'" >&2
    fi
}

case "${1:-}" in
    run)
        shift
        ensure_venv run
        exec "$VENV/bin/chronos" serve "$@"
        ;;
    test)
        shift
        ensure_venv test
        ensure_chromium
        "$VENV/bin/python" -m ruff check .
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh run [serve options] | ./dev.sh test [pytest options]" >&2
        exit 2
        ;;
esac
