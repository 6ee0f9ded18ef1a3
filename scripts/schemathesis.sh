#!/usr/bin/env bash
# Fuzzes a live server from its own OpenAPI document with schemathesis: requests generated from
# the schema (valid ones, and invalid ones derived from it) must never get a 5xx, and every
# response, 4xx included, must match what the document declares (the JSON error body).
#
# Usage: scripts/schemathesis.sh [BINARY]   (default target/debug/vicinity)
# Environment: SCHEMATHESIS_EXAMPLES (examples per operation and phase, default 80),
#              SCHEMATHESIS_MIN_CASES (fail below this many generated requests, default 1000),
#              SCHEMATHESIS_POSTGRES (an admin URL of a PostgreSQL server: the server under test
#              then stores its collections in a fresh database there instead of SQLite).
# The server runs on a free loopback port over a temporary data directory with the tiny
# fixture model, and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug/vicinity}
examples=${SCHEMATHESIS_EXAMPLES:-80}
min_cases=${SCHEMATHESIS_MIN_CASES:-1000}
# The interpreter's own scripts directory first: a console script that pip has just installed
# may not be on PATH yet (pyenv's shims, for one, appear only after a rehash).
st="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/schemathesis"
[ -x "$st" ] || st=$(command -v schemathesis) ||
  { echo "schemathesis is not installed (python3 -m pip install schemathesis)" >&2; exit 2; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
database=()
if [ -n "${SCHEMATHESIS_POSTGRES:-}" ]; then
  name="schemathesis_$$_$(date +%s)"
  psql -q "$SCHEMATHESIS_POSTGRES" -c "CREATE DATABASE $name"
  # The admin URL with the new database's name in place of its own.
  database=(--database-url "$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$SCHEMATHESIS_POSTGRES" "$name")")
  echo "schemathesis: the server stores its collections in PostgreSQL ($name)"
fi
RUST_LOG=warn "$bin" serve --addr "127.0.0.1:$port" --data-dir "$work/data" --model tests/fixtures/tiny-bert --chunk-overlap 4 \
  "${database[@]}" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 240); do
  curl -sf "$base/readyz" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.25
done
curl -sf "$base/readyz" >/dev/null || { echo "the server did not become ready" >&2; cat "$work/server.log" >&2; exit 1; }

# Something for the generated requests to find: a text collection with documents (the name the
# settings file steers generated requests to).
json=(-sf -H 'content-type: application/json')
curl "${json[@]}" -X PUT "$base/collections/docs" -d '{}' >/dev/null
curl "${json[@]}" -X POST "$base/collections/docs/documents" \
  -d '{"documents": [{"id": "a", "text": "lighthouses guide ships", "metadata": {"tag": 1}},
                     {"id": "b", "text": "harbours shelter boats", "metadata": {"tag": 2}}]}' >/dev/null

set +e
"$st" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  --seed 20261206 \
  --workers 1 \
  --request-timeout 30 \
  --suppress-health-check too_slow,filter_too_much \
  --report ndjson --report-ndjson-path "${SCHEMATHESIS_EVENTS:-$work/events.ndjson}" \
  --no-color 2>&1 | tee "$work/run.txt"
status=${PIPESTATUS[0]}
set -e

# Count the requests the run sent, from its event log: the floor the run must reach.
cases=$(python3 - "${SCHEMATHESIS_EVENTS:-$work/events.ndjson}" <<'EOF'
import json, sys
n = 0
with open(sys.argv[1]) as f:
    for line in f:
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished":
                n += len(body.get("recorder", {}).get("interactions", {}))
print(n)
EOF
)
echo "schemathesis: $cases requests sent"
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (exit $status); server log:" >&2
  tail -50 "$work/server.log" >&2
  exit "$status"
fi
if [ "$cases" -lt "$min_cases" ]; then
  echo "schemathesis sent $cases requests, fewer than the $min_cases required" >&2
  exit 1
fi
echo "schemathesis: passed ($cases requests, no 5xx, every response as documented)"
