#!/usr/bin/env bash
# One command for the app on a fresh machine: sets up .venv, then serves the Streamlit app.
# Extra args pass to streamlit (e.g. --server.port 8600) and override these (the last --server.address wins).
# Listens on 127.0.0.1:8501 by default: a private server, where server paths are on under the working folder.
# With --server.address 0.0.0.0 it is a shared server: server paths are off unless FAPN_ALLOW_LOCAL_PATHS=1
# (see docs/reliability.md).
source "$(dirname "$0")/env.sh"
exec streamlit run app/main.py --server.headless true --browser.gatherUsageStats false \
  --server.address 127.0.0.1 "$@"
