#!/usr/bin/env bash
# The whole suite: typecheck (tsc for the Bun side, deno check for the Deno suites), the Bun suites, then the
# Deno suites. Runs every stage even when an earlier one fails, and exits non-zero if any failed.
# Arguments go to `bun test` (paths, --test-name-pattern, ...); the Deno suites always run whole.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
# The Deno suites: `*.deno.ts` beside the Bun suites of what they test (bun test does not pick that name up;
# deno test is given them explicitly). tsconfig.deno.json adds Bun's types: the suites reach src/runtime/index.ts.
mapfile -t deno_suites < <(find test -name '*.deno.ts' -not -path 'test/support/*' | sort) # test/support/*.deno.ts: Deno-only helpers
deno_flags=(--unstable-net --config tsconfig.deno.json)
status=0
echo "== typecheck"
tsc --noEmit -p . || status=1
NO_COLOR=1 deno check "${deno_flags[@]}" "${deno_suites[@]}" || status=1
echo "== bun test"
# bunfig.toml's [test] timeout is not applied by this Bun; pass it explicitly (slow suites on a loaded 2-core box).
bun test --timeout 60000 "$@" || status=1
echo "== deno test"
# Checked just above; --no-check here so a type error elsewhere does not keep the suites from running (as
# bun test runs whatever tsc says).
NO_COLOR=1 deno test -A --no-check "${deno_flags[@]}" "${deno_suites[@]}" || status=1
exit $status
