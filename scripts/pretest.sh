#!/usr/bin/env bash
# Installs what the test suite needs from Debian, so `npm test` passes on a fresh machine by itself.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# promtool (check metrics/rules/config) and the prometheus server (end-to-end scrape test).
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need+=(prometheus)
# Headless Chromium for the admin page's end-to-end test (driven by playwright-core).
[ -x /usr/bin/chromium ] || need+=(chromium)
# Real HTTP/2 and gRPC peers for the h2c data path (test/support/grpc/): h2load, and grpcio for /usr/bin/python3.
/usr/bin/python3 -c "import grpc" 2>/dev/null || need+=(python3-grpcio)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "pretest: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "pretest: installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Packages with a daemon (prometheus) must not start it: the tests run their own on free ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# kubectl (kustomize) ships with this project's machine image; Debian has no package for it. The deploy
# tests compare our renderer with `kubectl kustomize`, so say clearly when it is missing.
command -v kubectl >/dev/null || echo "pretest: kubectl not found: test/deploy/render.test.ts needs it (kubectl kustomize)" >&2
