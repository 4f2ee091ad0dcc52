#!/usr/bin/env bash
# Set up a fresh Debian / Raspberry Pi OS (64-bit) machine that has only Python and apt:
# a venv with the project and its extras, and mosquitto from apt when it is missing.
# WITH_BROWSER=1 (make test) also installs Debian's chromium, which the report test renders in,
# after saying how many packages that is and which installed ones it upgrades.
# Idempotent: a second run only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "bootstrap: '$*' needs root, and sudo is not installed" >&2; return 1
  fi
}
apt_install() {
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo "bootstrap: installing python3-venv with apt-get"
    apt_install python3-venv || { echo "bootstrap: cannot create a venv; install python3-venv" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
  fi
fi
if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "bootstrap: installing the project into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[trainer,dev,sparkplug]"
  touch "$VENV/.installed"
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "bootstrap: installing mosquitto with apt-get"
  apt_install mosquitto || {
    echo "bootstrap: mosquitto is missing and could not be installed: run 'sudo apt-get install mosquitto'" >&2
    exit 1
  }
fi
if [ "${WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1 \
   && ! command -v chromium-headless-shell >/dev/null 2>&1; then
  # Chromium pulls in well over a hundred packages and may upgrade some installed ones: say
  # what apt-get will do, and why, before it does it (issue 17, item 5). `make demo` never
  # gets here: only `make test` sets WITH_BROWSER.
  as_root apt-get update -qq || { echo "bootstrap: apt-get update failed" >&2; exit 1; }
  plan=$(apt-get -s install chromium 2>/dev/null | grep '^Inst ' || true)
  new=$(printf '%s\n' "$plan" | grep -c '^Inst [^ ]* (' || true)
  upgraded=$(printf '%s\n' "$plan" | grep '^Inst [^ ]* \[' | cut -d' ' -f2 | tr '\n' ' ' || true)
  echo "bootstrap: make test renders the trainer's HTML report in a headless browser, and"
  echo "bootstrap: chromium is missing: apt-get installs chromium and its dependencies,"
  echo "bootstrap: ${new} new package(s)${upgraded:+, upgrading: ${upgraded% }}"
  echo "bootstrap: (make demo does not need it; to avoid it, install chromium or"
  echo "bootstrap: chromium-headless-shell yourself before make test)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || {
    echo "bootstrap: chromium is missing and could not be installed: run 'sudo apt-get install chromium'" >&2
    exit 1
  }
fi
