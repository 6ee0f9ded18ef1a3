#!/usr/bin/env bash
# The compose stack tested for real: builds the images (docker/build.sh), brings up PostgreSQL,
# three vicinity nodes and nginx (docker/compose.yaml), imports documents through the load
# balancer while one node is killed with SIGKILL and started again, and checks that no
# acknowledged document is lost, that the three nodes give identical answers, and that the
# example RAG client gets a sensible answer (docker/cluster_check.py). Then `down -v`.
#
# Traffic goes to 127.0.0.1 (the published load balancer) and to the stack's own containers.
# Exits non-zero on any failure; the stack's logs are printed when it fails.
# Usage: docker/cluster_test.sh [--no-build] [--docs N] (other arguments go to cluster_check.py);
# --no-build uses the images as they are.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=docker/engine.sh
source "$root/docker/engine.sh"

ensure_docker_engine
ensure_compose

started=$SECONDS
build=1
if [[ "${1:-}" == --no-build ]]; then
  build=0
  shift
fi
if ((build)); then
  bash "$root/docker/build.sh"
fi
# The stack's other images use the base build.sh used: the local one where it made one.
if have_image vicinity-local/debian:bookworm-slim && ! have_image debian:bookworm-slim; then
  export VICINITY_DEBIAN_IMAGE=vicinity-local/debian:bookworm-slim
fi

project="vicinity-test-$$"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
VICINITY_API_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
VICINITY_DB_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export VICINITY_API_KEY VICINITY_DB_PASSWORD VICINITY_PORT="$port"
compose=("${COMPOSE[@]}" --project-name "$project" --file "$root/docker/compose.yaml")

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    echo "cluster_test.sh: failed; the stack's last log lines:" >&2
    "${compose[@]}" logs --no-color --tail 40 >&2 || true
  fi
  "${compose[@]}" --profile client down --volumes --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

if ((build)); then
  # The classic builder, as build.sh uses: the Dockerfiles need nothing newer.
  DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 "${compose[@]}" --profile client build --quiet \
    postgres lb rag-client
fi
up_started=$SECONDS
"${compose[@]}" up --detach --no-build
echo "cluster_test.sh: stack healthy in $((SECONDS - up_started)) s"

container() { "${compose[@]}" ps --quiet "$1"; }
nodes=()
for n in vicinity-1 vicinity-2 vicinity-3; do
  nodes+=(--node "$n=$(container "$n")")
done

python3 "$root/docker/cluster_check.py" --lb "http://127.0.0.1:$port" "${nodes[@]}" \
  --kill vicinity-2 --rag-client "${compose[*]} run --rm rag-client" "$@"

echo "cluster_test.sh: passed in $((SECONDS - started)) s"
