# Shared by docker/build.sh and docker/cluster_test.sh (sourced, not run): what a machine
# without a Docker engine or a registry lacks, prepared from Debian's packages.

# Installs Debian packages. Nothing goes to stdout: some callers' stdout is captured.
apt_install() {
  echo "engine.sh: installing $*" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Whether the engine holds an image tagged $1.
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Starts a Docker engine unless one answers: installs Debian's docker.io if dockerd is missing,
# then runs dockerd in the background, logging to $TMPDIR.
ensure_docker_engine() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  if ! command -v dockerd >/dev/null; then
    apt_install docker.io
  fi
  local log="${TMPDIR:-/tmp}/vicinity-dockerd.log"
  echo "engine.sh: starting dockerd (log: $log)" >&2
  nohup dockerd >"$log" 2>&1 &
  local i
  for i in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return
    fi
    sleep 1
  done
  echo "engine.sh: dockerd did not answer within 60 s; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

# Sets the array COMPOSE to a Compose command: `docker compose`, else `docker-compose`, which is
# installed from Debian's packages where neither is present.
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
    return
  fi
  if ! command -v docker-compose >/dev/null; then
    apt_install docker-compose
  fi
  COMPOSE=(docker-compose)
}

# Prints the tag of a Debian bookworm base image built by debootstrap from Debian's packages,
# trimmed like the slim images (no documentation, manuals or locales, and none installed later).
# Built once per engine; reused while the tag exists.
local_debian_image() {
  local tag=vicinity-local/debian:bookworm-slim
  if have_image "$tag"; then
    echo "$tag"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    apt_install debootstrap
  fi
  local dir
  dir="$(mktemp -d)"
  echo "engine.sh: debootstrap bookworm into $dir" >&2
  debootstrap --variant=minbase bookworm "$dir/rootfs" >"$dir/debootstrap.log" 2>&1 || {
    tail -20 "$dir/debootstrap.log" >&2
    return 1
  }
  cat >"$dir/rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat >"$dir/rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
Acquire::Languages "none";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
  find "$dir/rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$dir"/rootfs/usr/share/{man,info,locale,lintian}/* \
    "$dir"/rootfs/var/lib/apt/lists/* "$dir"/rootfs/var/cache/apt/*.bin \
    "$dir"/rootfs/var/cache/apt/archives/*.deb "$dir"/rootfs/var/log/*.log
  tar --numeric-owner -C "$dir/rootfs" -c . |
    docker import --change 'CMD ["bash"]' - "$tag" >/dev/null
  rm -rf "$dir"
  echo "$tag"
}

# Prints the tag of a builder image made of the Debian image $1, a C and C++ toolchain from
# Debian's packages, and this machine's Rust toolchain (the one `rustc` runs). The machine's own
# certificate authorities go in too, so that cargo and pip inside the build reach the registries
# this machine reaches. Built once per toolchain version; reused while the tag exists.
local_rust_image() {
  local base="$1" version sysroot
  version="$(rustc --version | cut -d' ' -f2)"
  local tag="vicinity-local/rust:$version-bookworm"
  if have_image "$tag"; then
    echo "$tag"
    return
  fi
  sysroot="$(rustc --print sysroot)"
  local ctx
  ctx="$(mktemp -d)"
  mkdir -p "$ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates gcc g++ libc6-dev make pkg-config \\
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:\$PATH CARGO_HOME=/usr/local/cargo
RUN cargo --version && rustc --version
EOF
  echo "engine.sh: building $tag from $sysroot" >&2
  # The toolchain goes into the context without its documentation (half its size).
  tar -c -C "$ctx" Dockerfile ca \
    -C "$sysroot" --exclude=./share/doc --transform 's,^\.,toolchain,' . |
    DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" - >&2
  rm -rf "$ctx"
  echo "$tag"
}
