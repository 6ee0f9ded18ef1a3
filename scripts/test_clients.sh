#!/usr/bin/env bash
# The Python packages of clients/ tested against live servers they start themselves: the client
# (every endpoint, errors, retries), the LangChain store (langchain-tests' standard suite and its
# own tests), the LlamaIndex store, and the playground page in headless Chromium.
#
# Installs into a virtual environment of its own (target/py-clients): the packages from this
# repo, their test dependencies from PyPI at the versions of clients/constraints.txt, and Debian's
# chromium and chromium-driver when missing (root only).
#
# Usage: scripts/test_clients.sh [BINARY]   (default target/debug/vicinity)
# Environment: VICINITY_TEST_MODEL, a sentence-transformers model directory for the tests whose
# results depend on a real model (default: data/models/sentence-transformers/all-MiniLM-L6-v2
# when it is there; those tests are skipped, saying why, when there is none).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
binary="$(realpath "${1:-target/debug/vicinity}")"
[[ -x "$binary" ]] || { echo "test_clients.sh: no server binary at $binary" >&2; exit 1; }

if [[ -z "${VICINITY_TEST_MODEL:-}" && -f data/models/sentence-transformers/all-MiniLM-L6-v2/config.json ]]; then
  VICINITY_TEST_MODEL="$root/data/models/sentence-transformers/all-MiniLM-L6-v2"
fi
export VICINITY_BIN="$binary" VICINITY_TEST_MODEL="${VICINITY_TEST_MODEL:-}"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

venv="$root/target/py-clients"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check
  --constraint clients/constraints.txt)
"${pip[@]}" ./clients/python ./clients/langchain ./clients/llamaindex \
  pytest pytest-asyncio langchain-tests selenium

# The playground's screenshot test runs too, its picture thrown away.
shots="$(mktemp -d)"
trap 'rm -rf "$shots"' EXIT
export PLAYGROUND_SCREENSHOT="$shots/playground.png"

status=0
for suite in clients/python/tests clients/langchain/tests clients/llamaindex/tests tests/browser; do
  echo "test_clients.sh: $suite"
  # pytest's own entry point (not `python -m`) keeps the working directory off sys.path, so
  # each suite imports the installed package, as its users will.
  (cd "$suite/.." && "$venv/bin/pytest" -q -p no:cacheprovider \
    -o asyncio_default_fixture_loop_scope=function "$(basename "$suite")") ||
    status=1
done
exit $status
