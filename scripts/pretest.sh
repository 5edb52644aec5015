#!/usr/bin/env bash
# Installs what the test suite needs from Debian, so `npm test` passes on a fresh machine by itself.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "pretest: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "pretest: installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
