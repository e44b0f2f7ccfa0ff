#!/usr/bin/env bash
# One command for the test suite on a fresh machine: sets up .venv, then runs pytest (extra args pass through).
source "$(dirname "$0")/env.sh"
exec python -m pytest -q "$@"
