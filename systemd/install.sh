#!/usr/bin/env bash
# Install the agent as a systemd service on a gateway (64-bit Debian / Raspberry Pi OS).
#
#   sudo systemd/install.sh [PROFILE]     PROFILE: a file in device_configs/ (default raspberry-pi-4.toml)
#   sudo systemd/install.sh --uninstall   remove the service and the venv; keep config and state
#
# Layout: venv in /opt/edge-agent/venv, config and models in /etc/edge-agent, state in
# /var/lib/edge-agent (systemd's StateDirectory), user `edge-agent`. Idempotent: an existing
# /etc/edge-agent/agent.toml is never overwritten. DESTDIR=/some/root stages every file there
# instead, and skips the user, systemctl and apt steps (for packaging and tests).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
OPT="$DESTDIR/opt/edge-agent"
ETC="$DESTDIR/etc/edge-agent"
UNIT="$DESTDIR/etc/systemd/system/edge-agent.service"
live() { [ -z "$DESTDIR" ]; }

if [ "${1:-}" = "--uninstall" ]; then
  if live; then systemctl disable --now edge-agent.service 2>/dev/null || true; fi
  rm -f "$UNIT"
  rm -rf "$OPT"
  if live; then systemctl daemon-reload; fi
  echo "removed the service and $OPT; kept $ETC and /var/lib/edge-agent"
  exit 0
fi

PROFILE=${1:-raspberry-pi-4.toml}
[ -f "$SRC/device_configs/$PROFILE" ] || { echo "install: no profile device_configs/$PROFILE" >&2; exit 2; }
if live && [ "$(id -u)" != 0 ]; then echo "install: run as root (sudo)" >&2; exit 1; fi

if live && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && apt-get install -y -qq mosquitto
fi
if live && ! id edge-agent >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
fi

mkdir -p "$OPT" "$ETC/models" "$(dirname "$UNIT")"
[ -x "$OPT/venv/bin/python" ] || "$PYTHON" -m venv "$OPT/venv"
"$OPT/venv/bin/python" -m pip install -q --upgrade pip
"$OPT/venv/bin/python" -m pip install -q "$SRC"          # the agent only: no trainer extras
install -m 0644 "$SRC/README.md" "$OPT/README.md"
install -m 0644 "$SRC"/models/*.onnx "$ETC/models/"
if [ ! -f "$ETC/agent.toml" ]; then
  install -m 0644 "$SRC/device_configs/$PROFILE" "$ETC/agent.toml"
  echo "installed config $ETC/agent.toml from $PROFILE: set device.id and upstream.host"
fi
install -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT"

if live; then
  systemctl daemon-reload
  systemctl enable --now edge-agent.service
  systemctl --no-pager status edge-agent.service || true
else
  echo "staged under $DESTDIR (no user, no systemctl)"
fi
