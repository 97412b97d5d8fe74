#!/usr/bin/env bash
# Runs the whole test suite of vaka against real services: PostgreSQL on
# 127.0.0.1:5432 and Mosquitto on 127.0.0.1:1883. Starts them when they are
# installed but stopped, and installs them (and Chromium with chromedriver,
# for the browser tests) from Debian packages when they are missing. Extra arguments go to `cargo test`.
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

# The browser tests (tests/tests/browser) drive headless Chromium through
# chromedriver.
ensure_chromium() {
  if [ -x "${VAKA_CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then return; fi
  apt_install chromium chromium-driver
}

ensure_postgres
ensure_mosquitto
ensure_chromium
export VAKA_CHROMEDRIVER="${VAKA_CHROMEDRIVER:-/usr/bin/chromedriver}"
export VAKA_CHROMIUM="${VAKA_CHROMIUM:-/usr/bin/chromium}"

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

ensure_cargo_fuzz() {
  command -v cargo-fuzz >/dev/null && return 0
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
}

# A few seconds of coverage-guided fuzzing per target (see fuzz/README.md),
# starting from the committed corpus; new inputs go to a temporary
# directory so the tree stays clean. A crash fails the run and leaves its
# input in fuzz/artifacts/<target>/. cargo-fuzz needs nightly features:
# RUSTC_BOOTSTRAP=1 enables them on this stable toolchain, for these
# commands only. `--dev -s none`: a run of seconds needs a quick build more
# than fast executions, the targets are safe Rust and a panic is what they
# look for (AddressSanitizer and optimization would double the build; use
# them by hand for long runs). VAKA_FUZZ_SECONDS=0 skips the runs.
# VAKA_FUZZ_TARGETS picks the targets: `all`, or a list. By default every
# target, except that the hub's two (websocket messages and HTTP bodies),
# whose first build takes the whole hub under coverage instrumentation
# (about 6 minutes on two cores), are left out when this run is already
# past FUZZ_HUB_BEFORE seconds: on a fresh machine the cold builds of
# everything would take CI past its 15 minutes. Once built, they rebuild
# in seconds and run in every CI run.
fuzz_briefly() {
  local seconds="${VAKA_FUZZ_SECONDS:-8}"
  if [ "$seconds" = 0 ]; then log "fuzzing skipped (VAKA_FUZZ_SECONDS=0)"; return; fi
  if ! ensure_cargo_fuzz; then
    log "SKIPPING the fuzz runs: cargo-fuzz could not be installed"
    return
  fi
  local fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
  local opts=(--dev -s none --target-dir "${CARGO_TARGET_DIR:-$PWD/target}/fuzz")
  local scratch
  scratch=$(mktemp -d)
  local targets="${VAKA_FUZZ_TARGETS:-}"
  if [ -z "$targets" ]; then
    targets="senml validate"
    if [ "$SECONDS" -lt "${FUZZ_HUB_BEFORE:-300}" ]; then
      targets="$targets ws_message http_bodies"
    else
      log "not fuzzing ws_message and http_bodies this time: ${SECONDS}s into the run, and their" \
        "first build takes minutes (VAKA_FUZZ_TARGETS=all to run them anyway)"
    fi
  fi
  if [ "$targets" = all ]; then targets=$("${fuzz[@]}" list); fi
  for target in $targets; do
    log "building the fuzz target $target"
    "${fuzz[@]}" build "${opts[@]}" "$target"
    mkdir -p "$scratch/$target"
    if ! "${fuzz[@]}" run "${opts[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
      tail -n 40 "$scratch/$target.log" >&2
      log "fuzz target $target failed; the input is in fuzz/artifacts/$target/"
      rm -rf "$scratch"
      return 1
    fi
    log "fuzzed $target for ${seconds}s: $(grep -E '^stat::(number_of_executed_units|new_units_added)' \
      "$scratch/$target.log" | sed 's/stat:://' | tr -s ' \n' ' ')"
  done
  rm -rf "$scratch"
}

log "building"
cargo build --workspace --bins --quiet
log "testing (PostgreSQL: ${VAKA_TEST_DATABASE_URL%%@*}@…, MQTT: $VAKA_TEST_MQTT_URL)"
cargo test --workspace --all-targets "$@"
fuzz_briefly
# The HTTP API fuzzed from its OpenAPI document (< 1 min; VAKA_SKIP_FUZZ=1
# skips it, e.g. offline without a cached schemathesis).
if [ -z "${VAKA_SKIP_FUZZ:-}" ]; then
  log "fuzzing the HTTP API (scripts/schemathesis.sh)"
  ./scripts/schemathesis.sh
fi
