#!/usr/bin/env bash
# The image tested for real (built first by docker/build.sh unless --no-build):
# - it runs as a non-root user and is at most 250 MB, model included;
# - with no network at all, a read-only root file system and a tmpfs for /tmp, it becomes
#   healthy (the HEALTHCHECK on /readyz) with its baked model, and `docker stop` exits 0;
# - published on 127.0.0.1 with an API key, read-only too, it creates a collection, takes
#   documents and answers a text query with them; after `docker stop` (exit 0) and a start on
#   the same volume, the documents are still there.
# Prints the image's size and the start-to-healthy times. Exits non-zero on any failure.
# Usage: docker/image_test.sh [--no-build]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=docker/engine.sh
source "$root/docker/engine.sh"
image="${VICINITY_IMAGE:-vicinity:latest}"
max_mb=250

ensure_docker_engine
if [[ "${1:-}" != --no-build ]]; then
  bash "$root/docker/build.sh"
fi

name="vicinity-image-test-$$"
volume="$name-data"
key="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    echo "image_test.sh: failed; the container's last log lines:" >&2
    docker logs --tail 30 "$name" >&2 2>&1 || true
  fi
  docker rm --force "$name" >/dev/null 2>&1 || true
  docker volume rm --force "$volume" >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
fail() {
  echo "image_test.sh: FAILED: $*" >&2
  exit 1
}

size_mb=$(($(docker image inspect --format '{{.Size}}' "$image") / 1000000))
user="$(docker image inspect --format '{{.Config.User}}' "$image")"
echo "image_test.sh: $image is $size_mb MB, runs as '$user'"
[[ $size_mb -le $max_mb ]] || fail "the image is $size_mb MB, over $max_mb MB"
[[ -n "$user" && "$user" != root && "$user" != 0 ]] || fail "the image runs as root"

# Waits for the container's health check to pass; prints the seconds it took (assign its output
# to a variable, so that its failure ends the script).
wait_healthy() {
  local t0=$SECONDS state
  while ((SECONDS - t0 < 180)); do
    state="$(docker inspect --format '{{.State.Health.Status}} {{.State.Running}}' "$name")"
    case "$state" in
      "healthy true") echo $((SECONDS - t0)) && return ;;
      *" false") fail "the container exited before it was healthy" ;;
    esac
    sleep 0.2
  done
  fail "not healthy within 180 s"
}
stop_exit_code() {
  docker stop --time 60 "$name" >/dev/null
  docker inspect --format '{{.State.ExitCode}}' "$name"
}
safe=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
  --volume "$volume:/data")

# No network, read-only: the baked model is all it needs.
docker run --detach --name "$name" --network none "${safe[@]}" "$image" >/dev/null
took="$(wait_healthy)"
echo "image_test.sh: no network, read-only root: healthy after $took s"
code="$(stop_exit_code)"
[[ "$code" == 0 ]] || fail "docker stop: exit code $code"
echo "image_test.sh: docker stop: exit code $code"
docker rm "$name" >/dev/null

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
api() { # METHOD PATH [BODY]: the answer's body; fails on a non-2xx answer
  curl --silent --show-error --fail-with-body --max-time 60 -X "$1" "$url$2" \
    -H "authorization: Bearer $key" -H 'content-type: application/json' ${3:+--data "$3"}
}
serve() {
  docker run --detach --name "$name" --publish "127.0.0.1:$port:8080" \
    --env VICINITY_API_KEY="$key" "${safe[@]}" "$image" >/dev/null
}

serve
took="$(wait_healthy)"
echo "image_test.sh: published on 127.0.0.1, read-only root: healthy after $took s"
status="$(curl --silent --output /dev/null --write-out '%{http_code}' "$url/collections")"
[[ "$status" == 401 ]] || fail "a request without the API key answered $status, not 401"
api PUT /collections/notes '{"distance": "cosine"}' >/dev/null
api POST /collections/notes/documents '{"documents": [
  {"id": "tea", "text": "Green tea is brewed with water below boiling, for two or three minutes."},
  {"id": "bikes", "text": "A bicycle chain wants oil after rain, and a wipe before the oil."},
  {"id": "stars", "text": "The telescope shows the rings of Saturn on a clear, dark night."}]}' >/dev/null
answer="$(api POST /collections/notes/query '{"query": "how long should tea steep?", "k": 1}')"
echo "image_test.sh: query answer: $answer"
python3 -c 'import json, sys; assert json.loads(sys.argv[1])["results"][0]["document_id"] == "tea"' \
  "$answer" || fail "the tea question did not find the tea document"
code="$(stop_exit_code)"
[[ "$code" == 0 ]] || fail "docker stop: exit code $code"
echo "image_test.sh: docker stop: exit code $code"
docker rm "$name" >/dev/null

serve
took="$(wait_healthy)"
echo "image_test.sh: restarted on the same volume: healthy after $took s"
api GET /collections/notes/documents/bikes | grep -q chain || fail "the documents did not survive"
code="$(stop_exit_code)"
[[ "$code" == 0 ]] || fail "docker stop after the restart: exit code $code"
echo "image_test.sh: passed"
