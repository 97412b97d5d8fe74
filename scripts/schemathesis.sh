#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis: a real
# `vaka serve` on a fresh SQLite database and a free port, every operation of
# /api/v1/openapi.json called with generated valid and invalid input as the
# service token (and, for `ignored_auth`, without it). Fails on any 5xx and
# on answers that contradict the document.
#
# Needs: the built `vaka` (target/debug/vaka, or $VAKA_BIN), python3 with
# venv, PyPI (only the first time: schemathesis goes into a venv under
# ~/.cache/vaka-venv), and Mosquitto on 127.0.0.1:1883 for /readyz (as
# scripts/test.sh starts it). Bounded: a few examples per operation, well
# under a minute. FUZZ_EXAMPLES and FUZZ_SEED change the run; extra
# arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mschemathesis.sh:\033[0m %s\n' "$*" >&2; }

# The CLI changed in v4 (checks, phases, --max-examples); pin what this
# script was written for.
VERSION=4.32.5
VENV="${VAKA_VENV:-$HOME/.cache/vaka-venv}"
ST="$VENV/bin/schemathesis"
if ! "$ST" --version 2>/dev/null | grep -qF "version $VERSION"; then
  log "installing schemathesis $VERSION from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

BIN="${VAKA_BIN:-${CARGO_TARGET_DIR:-target}/debug/vaka}"
if [ ! -x "$BIN" ]; then
  log "building vaka"
  cargo build -p vaka-hub --bin vaka --quiet
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vaka-fuzz-XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A throwaway token, passed in the environment (not visible in `ps`).
TOKEN="fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
NAME=$(basename "$WORK")
VAKA_API_TOKEN="$TOKEN" VAKA_LOG=warn "$BIN" serve \
  --database-url "sqlite://$WORK/vaka.db" \
  --mqtt-url "${VAKA_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}" \
  --mqtt-client-id "$NAME" \
  --topic-root "fuzz/$NAME" \
  --http 127.0.0.1:0 \
  >"$WORK/stdout" 2>"$WORK/vaka.log" &
PID=$!

ADDR=
for _ in $(seq 1 300); do
  ADDR=$(sed -n 's/^vaka: listening on //p' "$WORK/stdout")
  [ -n "$ADDR" ] && break
  if ! kill -0 "$PID" 2>/dev/null; then
    log "vaka exited before listening:"; cat "$WORK/vaka.log" >&2; exit 1
  fi
  sleep 0.1
done
[ -n "$ADDR" ] || { log "vaka did not start listening"; cat "$WORK/vaka.log" >&2; exit 1; }
for _ in $(seq 1 100); do
  curl -fsS "$ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

# Something to find: a unit, a patient in it, a device bound to her. The
# fuzzer mostly invents ids (404s), but the examples and coverage phases
# also try these, and the lists are not empty.
api() {
  curl -fsS -o /dev/null -X "$1" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' "$ADDR$2" ${3:+--data "$3"}
}
api POST /api/v1/care-units '{"id":"vc-fuzz","name":"Fuzz vårdcentral","kind":"region"}'
api POST /api/v1/patients '{"id":"p-fuzz","name":"Fuzz Fuzzsson","units":["vc-fuzz"]}'
api POST /api/v1/devices '{"id":"scale-fuzz","kind":"scale"}'
api PUT /api/v1/devices/scale-fuzz/binding '{"patient_id":"p-fuzz"}'

log "fuzzing $ADDR/api/v1/openapi.json (log: kept on failure)"
# Checks: no 5xx; statuses, content types, headers and bodies as the
# document says; invalid input refused; authentication not ignored.
# `positive_data_acceptance` is left out: schema-valid requests about ids
# that do not exist are rightly 404, which it would count as failures.
# One worker: hypothesis describes a filter's lambda by parsing its source
# file with `ast.parse`, and CPython 3.11 before 3.11.8 keeps the AST
# converter's recursion depth in state shared by threads, so two workers
# parsing at once now and then fail with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905), an error of the run
# that has nothing to do with vaka.
CONFIG="$PWD/scripts/schemathesis.toml"
export VAKA_FUZZ_TOKEN="$TOKEN"
set +e
(
  cd "$WORK"
  "$ST" --config-file "$CONFIG" run "$ADDR/api/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,missing_required_header,unsupported_method \
    --phases examples,coverage,fuzzing \
    --max-examples "${FUZZ_EXAMPLES:-5}" \
    --max-time "${FUZZ_MAX_TIME:-40}" \
    --seed "${FUZZ_SEED:-20261201}" \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    "$@"
)
STATUS=$?
set -e
if grep -q '"level":"ERROR"\|ERROR' "$WORK/vaka.log"; then
  log "vaka logged errors:"; grep 'ERROR' "$WORK/vaka.log" | head -20 >&2
  [ "$STATUS" -ne 0 ] || STATUS=1
fi
if [ "$STATUS" -ne 0 ]; then
  cp "$WORK/vaka.log" "${TMPDIR:-/tmp}/vaka-fuzz-last.log" 2>/dev/null || true
  log "failed (vaka's log: ${TMPDIR:-/tmp}/vaka-fuzz-last.log)"
fi
exit "$STATUS"
