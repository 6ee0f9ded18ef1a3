#!/usr/bin/env bash
# Builds the image from docker/Dockerfile and tags it vicinity:latest.
#
# On a machine with a Docker engine and a registry this is `docker build` with the Dockerfile's
# defaults. On a machine without them it first prepares what is missing:
# - the engine: Debian's docker.io, started as dockerd (root only);
# - the base images, when the registry cannot be reached: a Debian bookworm root file system made
#   by debootstrap from Debian's packages (vicinity-local/debian:bookworm-slim), and a builder
#   image holding this machine's own Rust toolchain (vicinity-local/rust:VERSION-bookworm). They
#   are passed to the Dockerfile as build arguments; the Dockerfile itself is the one users build.
#
# Usage: docker/build.sh [extra docker build arguments]
# Environment:
#   VICINITY_BASE_IMAGES  auto (default: pull the defaults, else build them locally), local, or
#                         registry (pull only)
#   VICINITY_IMAGE        the tag to build (default vicinity:latest)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=docker/engine.sh
source "$root/docker/engine.sh"

image="${VICINITY_IMAGE:-vicinity:latest}"
mode="${VICINITY_BASE_IMAGES:-auto}"

ensure_docker_engine

# The Dockerfile's defaults, read from it so that the two never disagree.
default_arg() { sed -n "s/^ARG $1=//p" "$root/docker/Dockerfile"; }
rust_default="$(default_arg RUST_IMAGE)"
runtime_default="$(default_arg RUNTIME_IMAGE)"

pull() { have_image "$1" || docker pull --quiet "$1" >/dev/null 2>&1; }

build_args=()
if [[ "$mode" != local ]] && pull "$rust_default" && pull "$runtime_default"; then
  echo "build.sh: base images $rust_default and $runtime_default"
elif [[ "$mode" == registry ]]; then
  echo "build.sh: cannot pull $rust_default or $runtime_default" >&2
  exit 1
else
  echo "build.sh: no registry reachable; base images made from Debian's packages"
  runtime_local="$(local_debian_image)"
  rust_local="$(local_rust_image "$runtime_local")"
  build_args=(--build-arg "RUST_IMAGE=$rust_local" --build-arg "RUNTIME_IMAGE=$runtime_local")
fi

started=$SECONDS
# The classic builder: every Docker engine has it, and the Dockerfile needs nothing newer.
DOCKER_BUILDKIT=0 docker build --file "$root/docker/Dockerfile" --tag "$image" \
  "${build_args[@]}" "$@" "$root"
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "build.sh: $image built in $((SECONDS - started)) s, $((size / 1000000)) MB"
