#!/usr/bin/env bash
# One command for the app on a fresh machine: sets up .venv, then serves the Streamlit app.
# Extra args pass to streamlit (e.g. --server.port 8600). Listens on localhost:8501 by default.
source "$(dirname "$0")/env.sh"
exec streamlit run app/main.py --server.headless true --browser.gatherUsageStats false "$@"
