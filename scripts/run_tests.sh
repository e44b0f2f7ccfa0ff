#!/usr/bin/env bash
# One command for the test suite on a fresh machine (what CI runs, via .ci/run): sets up .venv, installs Debian
# chromium for the browser tests where it can (root + apt-get; FAPN_NO_APT=1 skips that), then runs pytest (extra
# args pass through). Where chromium cannot be installed the browser tests are skipped, and the run's summary says so.
source "$(dirname "$0")/env.sh"
if ! command -v chromium >/dev/null 2>&1 && [ -z "${FAPN_NO_APT:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[fapn-lab] installing Debian chromium for the browser end-to-end tests (once, about a minute)" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } \
      || echo "[fapn-lab] chromium install failed: the browser tests will be skipped (the summary says so)" >&2
  else
    echo "[fapn-lab] Debian chromium is not installed and this user cannot install it (needs root and apt-get):" \
         "the browser tests will be skipped (the summary says so); 'apt-get install chromium' enables them" >&2
  fi
fi
exec python -m pytest -q "$@"
