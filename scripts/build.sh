#!/usr/bin/env bash
# `npm run build`: compile kubegate into one self-contained binary, dist/kubegate (Bun's runtime
# included, every module bundled, the runtime port for Deno too though only Bun's runs in it).
#
# --bytecode precompiles the bundle to JavaScriptCore bytecode (faster start); it needs ESM output
# for the top-level await in src/runtime/index.ts. If that build fails or its binary does not run,
# the build falls back to plain minified JavaScript and says so.
#
# Env: OUT (default dist/kubegate), TARGET (e.g. bun-linux-arm64 to cross-compile; default: this host).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
out="${OUT:-dist/kubegate}"
mkdir -p "$(dirname "$out")"
target=()
[ -n "${TARGET:-}" ] && target=(--target "$TARGET")

compile() {
  bun build --compile --minify --sourcemap=none "${target[@]}" "$@" src/main.ts --outfile "$out" >/dev/null
}

# The binary must at least print its version (skipped when cross-compiling).
works() {
  [ -n "${TARGET:-}" ] && return 0
  "$out" --version >/dev/null 2>&1
}

if compile --bytecode --format=esm && works; then
  mode="bytecode"
else
  echo "build: the --bytecode binary did not build or run; building without bytecode" >&2
  compile
  works || { echo "build: $out does not run ($out --version failed)" >&2; exit 1; }
  mode="minified JS"
fi
size=$(du -h "$out" | cut -f1)
echo "build: $out ($mode, $size): $("$out" --version 2>/dev/null || echo "cross-compiled for $TARGET")"
