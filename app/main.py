"""FaPN Lab — Streamlit entry point (``streamlit run app/main.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="FaPN Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page(str(ROOT / "pages" / "models.py"), title="Models", icon="🧱", default=True),
]
st.navigation(PAGES).run()
