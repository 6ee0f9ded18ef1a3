#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: CI starts one for the whole run, and the test
# harness (src/testing/postgres.rs) starts one per test process through this script, so both get
# the same settings. Durability is traded for speed (fsync off, WAL not forced), trust
# authentication, TCP on loopback only; nothing here is fit to hold data worth keeping.
#
# Usage: scripts/postgres.sh start DIR   initialises and starts a server with everything in DIR
#                                        (created; must be empty), and prints its admin URL,
#                                        postgres://postgres@127.0.0.1:PORT/postgres, on stdout
#        scripts/postgres.sh stop DIR    stops it and removes DIR
#        scripts/postgres.sh halt DIR    stops it and keeps DIR, for a test of an outage
#        scripts/postgres.sh resume DIR  starts a halted server again, on the same port
# Installs nothing: initdb and pg_ctl come from PATH, else from the newest Debian-style
# /usr/lib/postgresql/N/bin (the Debian package does not put them on PATH). PostgreSQL refuses
# to run as root, so under root the server runs as the `postgres` system user.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 start|stop|halt|resume DIR"
cmd=$1
dir=$2
# `stop` removes DIR with rm -rf, so it only does so where `start` left this mark.
mark=.vicinity-postgres

# Runs a PostgreSQL program as the user the server runs as.
as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bindir() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  echo "postgres.sh: PostgreSQL is not installed (no initdb and pg_ctl on PATH or in" \
    "/usr/lib/postgresql/*/bin)" >&2
  exit 2
}

start() {
  local bin port url
  bin=$(bindir)
  mkdir -p "$dir"
  [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
  dir=$(cd "$dir" && pwd)
  touch "$dir/$mark"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir" ||
    die "running as root, and the 'postgres' user cannot own $dir"

  # cd: the server user may not be allowed into the caller's directory.
  (cd "$dir" && as_server_user "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
    -E UTF8 --locale=C >"$dir/initdb.log" 2>&1) ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # Unix sockets off: the URL names TCP, and the default socket directory (/var/run/postgresql
  # on Debian) may not exist or be writable. 200 connections leave room for a pool per test.
  cat >>"$dir/data/postgresql.conf" <<'EOF'

# scripts/postgres.sh: a throwaway server for tests
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
EOF

  # A port that nothing answers on, and another try if the server still loses it to a race.
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    if (cd "$dir" && as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port" start >/dev/null); then
      url="postgres://postgres@127.0.0.1:$port/postgres"
      echo "$url" >"$dir/url"
      echo "$url"
      return
    fi
  done
  tail -n 20 "$dir/server.log" >&2 2>/dev/null || true
  die "the server did not start (log: $dir/server.log)"
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -f "$dir/$mark" ]; then
    if [ -f "$dir/data/postmaster.pid" ]; then
      local bin
      bin=$(bindir)
      (cd "$dir" && as_server_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null) ||
        echo "postgres.sh: pg_ctl stop failed; removing $dir anyway" >&2
    fi
    rm -rf "$dir"
  elif [ -z "$(ls -A "$dir")" ]; then
    rmdir "$dir"
  else
    die "$dir was not made by '$0 start'; not removing it"
  fi
}

# Stops the server as an outage would (clients are disconnected; what they committed is kept),
# leaving DIR for `resume`.
halt() {
  [ -f "$dir/$mark" ] || die "$dir was not made by '$0 start'"
  local bin
  bin=$(bindir)
  dir=$(cd "$dir" && pwd)
  (cd "$dir" && as_server_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null) ||
    die "pg_ctl stop failed"
}

# Starts a halted server again on the port it had, so that its URL still holds.
resume() {
  [ -f "$dir/$mark" ] && [ -f "$dir/url" ] || die "$dir holds no server made by '$0 start'"
  local bin url port
  bin=$(bindir)
  dir=$(cd "$dir" && pwd)
  url=$(cat "$dir/url")
  port=${url##*:}
  port=${port%%/*}
  (cd "$dir" && as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port" start >/dev/null) ||
    { tail -n 20 "$dir/server.log" >&2 2>/dev/null || true; die "the server did not start again"; }
}

case $cmd in
  start) start ;;
  stop) stop ;;
  halt) halt ;;
  resume) resume ;;
  *) die "usage: $0 start|stop|halt|resume DIR" ;;
esac
