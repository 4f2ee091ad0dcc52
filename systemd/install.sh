#!/usr/bin/env bash
# Install the agent as a systemd service on a gateway (64-bit Debian / Raspberry Pi OS).
#
#   sudo systemd/install.sh [PROFILE]     PROFILE: a file in device_configs/ (default raspberry-pi-4.toml)
#   sudo systemd/install.sh --uninstall   remove the service, the venv and the broker drop-in;
#                                         keep config, passwords and state
#
# Layout: venv in /opt/edge-agent/venv and the manual in /opt/edge-agent/docs, config and models
# in /etc/edge-agent, state in /var/lib/edge-agent (systemd's StateDirectory), user
# `edge-agent`. The local broker gets mosquitto/edge-gateway.conf as
# /etc/mosquitto/conf.d/edge-gateway.conf, its ACL as /etc/mosquitto/edge-gateway.acl and a
# password file /etc/mosquitto/edge-gateway.passwd with users `edge-agent` and `sensors`, whose
# random passwords go to /etc/edge-agent/local.password (group edge-agent) and
# /etc/edge-agent/sensors.password (root only); passwords are never printed nor put on a
# command line.
#
# Idempotent: an existing agent.toml, ACL, password file or password is never overwritten (the
# unit, the venv and the broker drop-in are refreshed). DESTDIR=/some/root stages every file
# there instead, and skips the user, chown, systemctl and apt steps (for packaging and tests).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
OPT="$DESTDIR/opt/edge-agent"
ETC="$DESTDIR/etc/edge-agent"
UNIT="$DESTDIR/etc/systemd/system/edge-agent.service"
MOSQ="$DESTDIR/etc/mosquitto"
MOSQ_CONF="$MOSQ/conf.d/edge-gateway.conf"
MOSQ_ACL="$MOSQ/edge-gateway.acl"
MOSQ_PASSWD="$MOSQ/edge-gateway.passwd"
live() { [ -z "$DESTDIR" ]; }

if [ "${1:-}" = "--uninstall" ]; then
  if live; then systemctl disable --now edge-agent.service 2>/dev/null || true; fi
  rm -f "$UNIT" "$MOSQ_CONF"
  rm -rf "$OPT"
  if live; then
    systemctl daemon-reload
    systemctl try-restart mosquitto.service || true   # back to the broker's own settings
  fi
  echo "removed the service, $OPT and $MOSQ_CONF;" \
    "kept $ETC (config and passwords), $MOSQ_ACL, $MOSQ_PASSWD and /var/lib/edge-agent"
  exit 0
fi

PROFILE=${1:-raspberry-pi-4.toml}
[ -f "$SRC/device_configs/$PROFILE" ] || { echo "install: no profile device_configs/$PROFILE" >&2; exit 2; }
for f in mosquitto/edge-gateway.conf mosquitto/edge-gateway.acl; do
  [ -f "$SRC/$f" ] || { echo "install: missing $f (the broker config this install needs)" >&2; exit 2; }
done
if live && [ "$(id -u)" != 0 ]; then echo "install: run as root (sudo)" >&2; exit 1; fi

if live && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && apt-get install -y -qq mosquitto
fi
command -v mosquitto_passwd >/dev/null 2>&1 || {
  echo "install: mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 2; }
if live && ! id edge-agent >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
fi

mkdir -p "$OPT" "$ETC/models" "$(dirname "$UNIT")" "$(dirname "$MOSQ_CONF")"
[ -x "$OPT/venv/bin/python" ] || "$PYTHON" -m venv "$OPT/venv"
"$OPT/venv/bin/python" -m pip install -q --upgrade pip
"$OPT/venv/bin/python" -m pip install -q "$SRC"          # the agent only: no trainer extras
install -m 0644 "$SRC/README.md" "$OPT/README.md"
# The manual, where the unit's Documentation= points (`systemctl status edge-agent` shows it).
install -d -m 0755 "$OPT/docs"
install -m 0644 "$SRC"/docs/*.md "$OPT/docs/"
install -m 0644 "$SRC"/models/*.onnx "$ETC/models/"
if [ ! -f "$ETC/agent.toml" ]; then
  install -m 0644 "$SRC/device_configs/$PROFILE" "$ETC/agent.toml"
  echo "installed config $ETC/agent.toml from $PROFILE: set device.id and upstream.host"
fi
install -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT"

# The broker: a listener change only takes effect on a restart; passwords and the ACL on a reload.
broker=reload
cmp -s "$SRC/mosquitto/edge-gateway.conf" "$MOSQ_CONF" || broker=restart
install -m 0644 "$SRC/mosquitto/edge-gateway.conf" "$MOSQ_CONF"
# mosquitto reads the ACL and the password file after dropping to user mosquitto. The ACL is
# the operator's once installed (sensor accounts are added to it): never overwritten.
if [ ! -f "$MOSQ_ACL" ]; then
  install -m 0640 "$SRC/mosquitto/edge-gateway.acl" "$MOSQ_ACL"
  if live; then chgrp mosquitto "$MOSQ_ACL"; fi
fi

# new_password FILE MODE GROUP: a random password in FILE, never readable by others (umask 077
# until its mode and group are set). Only the first line counts.
new_password() {
  (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$1.tmp")
  chmod "$2" "$1.tmp"
  if live; then chown "root:$3" "$1.tmp"; fi
  mv "$1.tmp" "$1"
}
# add_user USER FILE: USER with the password in FILE, on stdin (mosquitto_passwd asks twice),
# never on a command line.
add_user() {
  local pw
  pw=$(head -n 1 "$2")
  printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "${@:3}" "$MOSQ_PASSWD.tmp" "$1" >/dev/null
}
if [ ! -f "$MOSQ_PASSWD" ]; then
  # A password kept from an earlier, interrupted run is reused, never replaced.
  [ -f "$ETC/local.password" ] || new_password "$ETC/local.password" 0640 edge-agent
  [ -f "$ETC/sensors.password" ] || new_password "$ETC/sensors.password" 0600 root
  (umask 077; add_user edge-agent "$ETC/local.password" -c; add_user sensors "$ETC/sensors.password")
  chmod 0640 "$MOSQ_PASSWD.tmp"
  if live; then chown root:mosquitto "$MOSQ_PASSWD.tmp"; fi
  mv "$MOSQ_PASSWD.tmp" "$MOSQ_PASSWD"
  broker=restart
  echo "created $MOSQ_PASSWD with users edge-agent and sensors"
else
  for f in "$ETC/local.password" "$ETC/sensors.password"; do
    [ -f "$f" ] || echo "install: $MOSQ_PASSWD exists but $f does not; kept both as they are" >&2
  done
fi
echo "broker passwords: agent (user edge-agent) in $ETC/local.password," \
  "sensors (user sensors) in $ETC/sensors.password"

if live; then
  if [ "$broker" = restart ]; then systemctl restart mosquitto.service
  else systemctl reload-or-restart mosquitto.service; fi
  systemctl daemon-reload
  systemctl enable --now edge-agent.service
  systemctl --no-pager status edge-agent.service || true
else
  echo "staged under $DESTDIR (no user, no chown, no systemctl)"
fi
