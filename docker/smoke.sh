#!/usr/bin/env bash
# Runs the container image's command line and environment without Docker: reads CMD, ENV and
# HEALTHCHECK from docker/Dockerfile, starts that command with only that environment (the
# model and data paths pointed at local ones, the port at a free one), and checks that
# - the HEALTHCHECK command fails before the server is ready, then passes;
# - a collection can be created, written and queried by text;
# - nothing was downloaded into the data volume (the baked model was used);
# - SIGTERM (docker stop) exits 0, and the documents are there after a restart on the same
#   volume.
# Usage: docker/smoke.sh [BINARY] [MODEL_DIR]
#   BINARY     default target/release/vicinity (or $CARGO_TARGET_DIR/release/vicinity)
#   MODEL_DIR  the all-MiniLM-L6-v2 directory baked into the image at /models/all-MiniLM-L6-v2
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$(realpath "${1:-${CARGO_TARGET_DIR:-$root/target}/release/vicinity}")"
model="$(realpath "${2:-$root/data/models/sentence-transformers/all-MiniLM-L6-v2}")"
dockerfile="$root/docker/Dockerfile"

# The image's ENV lines (KEY=VALUE, one per line) and its CMD and HEALTHCHECK as argument lists.
image_env="$(python3 - "$dockerfile" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
runtime = text.split("\nFROM ")[-1]  # the last stage is the image
for line in runtime.splitlines():
    if line.startswith("ENV "):
        for pair in line[4:].split():
            print(pair)
PY
)"
json_args() { # the exec-form JSON array after $1 in the last stage's line starting with $2
  python3 - "$dockerfile" "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ").split("\nFROM ")[-1]
for line in text.splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(" ".join(json.loads(line[line.index("["):])))
PY
}
cmd=($(json_args CMD))
health=($(json_args HEALTHCHECK))
[[ ${cmd[0]} == vicinity && ${health[0]} == vicinity ]] || { echo "unexpected CMD/HEALTHCHECK: ${cmd[*]} / ${health[*]}"; exit 1; }

data="$(mktemp -d)"
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$data" "${bindir:-}"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

# The container's environment, with its paths mapped onto this machine.
env_args=()
while IFS= read -r kv; do
  kv="${kv/#VICINITY_DATA_DIR=\/data/VICINITY_DATA_DIR=$data}"
  kv="${kv/#VICINITY_MODEL=\/models\/all-MiniLM-L6-v2/VICINITY_MODEL=$model}"
  kv="${kv/#VICINITY_ADDR=0.0.0.0:8080/VICINITY_ADDR=0.0.0.0:$port}"
  env_args+=("$kv")
done <<<"$image_env"
bindir="$(mktemp -d)"; ln -s "$binary" "$bindir/vicinity"
run_env=(env -i "PATH=$bindir:/usr/local/bin:/usr/bin:/bin" "HOME=$data" "${env_args[@]}")
echo "environment: ${env_args[*]}"

start() {
  (cd "$data" && exec "${run_env[@]}" "${cmd[@]}") >>"$data/server.log" 2>&1 &
  pid=$!
}
wait_healthy() {
  for _ in $(seq 600); do
    if "${run_env[@]}" "${health[@]}" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$data/server.log"; echo "server exited"; exit 1; }
    sleep 0.2
  done
  echo "not healthy after 120 s"; cat "$data/server.log"; exit 1
}
base="http://127.0.0.1:$port"
req() { curl -sS -f -X "$1" "$base$2" -H 'content-type: application/json' ${3:+-d "$3"}; }

echo "running: ${cmd[*]} (health check: ${health[*]})"
if "${run_env[@]}" "${health[@]}" 2>/dev/null; then echo "health check passed with no server"; exit 1; fi
start
wait_healthy
echo "healthy"
req PUT /collections/smoke '{"distance":"cosine"}' >/dev/null
req POST /collections/smoke/documents '{"documents":[
  {"id":"lighthouse","text":"Lighthouses guide ships past dangerous coasts at night."},
  {"id":"sourdough","text":"A sourdough starter is flour and water colonised by wild yeast."}]}' >/dev/null
top="$(req POST /collections/smoke/query '{"query":"how do sailors avoid rocks in the dark?","k":1}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["document_id"])')"
[[ $top == lighthouse ]] || { echo "query found $top, expected lighthouse"; exit 1; }
echo "query ok: $top"
if [[ -e $data/models ]]; then echo "a model was downloaded into the data volume"; exit 1; fi

kill -TERM "$pid"
code=0; wait "$pid" || code=$?
[[ $code == 0 ]] || { echo "SIGTERM exit status $code"; cat "$data/server.log"; exit 1; }
echo "SIGTERM: exit 0"
start
wait_healthy
count="$(req GET /collections/smoke | python3 -c 'import json,sys; print(json.load(sys.stdin)["documents"])')"
[[ $count == 2 ]] || { echo "after restart: $count documents, expected 2"; exit 1; }
echo "restart on the same volume: $count documents"
kill -TERM "$pid"; wait "$pid"

echo "smoke test passed"
