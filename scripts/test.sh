#!/usr/bin/env bash
# Runs the whole test suite of vaka against real services: PostgreSQL on
# 127.0.0.1:5432 and Mosquitto on 127.0.0.1:1883. Starts them when they are
# installed but stopped, and installs them from Debian packages when they
# are missing. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mtest.sh:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
  log "nothing listens on 127.0.0.1:$1"; return 1
}

ensure_postgres() {
  if port_open 5432; then return; fi
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432
}

ensure_mosquitto() {
  if port_open 1883; then return; fi
  command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
  log "starting Mosquitto"
  as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port 1883
}

ensure_postgres
ensure_mosquitto

# The tests create (and drop) their own databases through this one.
export VAKA_TEST_DATABASE_URL="${VAKA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$VAKA_TEST_DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1; then
  # A fresh Debian install asks for a password over TCP: give the postgres
  # role one for the tests.
  log "setting a password for the postgres role (fresh PostgreSQL install)"
  as_root su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD 'postgres'\"" >/dev/null
  export VAKA_TEST_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi
export VAKA_TEST_MQTT_URL="${VAKA_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}"

log "building"
cargo build --workspace --bins --quiet
log "testing (PostgreSQL: ${VAKA_TEST_DATABASE_URL%%@*}@…, MQTT: $VAKA_TEST_MQTT_URL)"
cargo test --workspace --all-targets "$@"
# The HTTP API fuzzed from its OpenAPI document (< 1 min; VAKA_SKIP_FUZZ=1
# skips it, e.g. offline without a cached schemathesis).
if [ -z "${VAKA_SKIP_FUZZ:-}" ]; then
  log "fuzzing the HTTP API (scripts/schemathesis.sh)"
  ./scripts/schemathesis.sh
fi
