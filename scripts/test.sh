#!/usr/bin/env bash
# The whole suite: typecheck, the Bun suites, then the Deno suites. Runs every stage even when an
# earlier one fails, and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
status=0
echo "== typecheck"
tsc --noEmit -p . || status=1
echo "== bun test"
# bunfig.toml's [test] timeout is not applied by this Bun; pass it explicitly (slow suites on a loaded 2-core box).
bun test --timeout 60000 "$@" || status=1
echo "== deno test"
NO_COLOR=1 deno test -A --no-check --unstable-net test/deno/ || status=1
exit $status
