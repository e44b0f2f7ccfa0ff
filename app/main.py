"""FaPN Lab — Streamlit entry point: ``streamlit run app/main.py`` (see README for the one-command start)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT),):
    if p not in sys.path:
        sys.path.insert(0, p)

from app import sidebar  # noqa: E402

st.set_page_config(page_title="FaPN Lab", page_icon=":material/explore:", layout="wide")

PAGE_DIR = ROOT / "pages"
PAGES = [
    st.Page(str(PAGE_DIR / "compare.py"), title="Compare", icon=":material/compare:", default=True),
    st.Page(str(PAGE_DIR / "offsets.py"), title="Offsets (FAM)", icon=":material/explore:"),
    st.Page(str(PAGE_DIR / "channels.py"), title="Channels (FSM)", icon=":material/tune:"),
    st.Page(str(PAGE_DIR / "boundaries.py"), title="Boundaries", icon=":material/border_style:"),
    st.Page(str(PAGE_DIR / "small_objects.py"), title="Small objects", icon=":material/zoom_in:"),
    st.Page(str(PAGE_DIR / "queries.py"), title="Queries (MaskFormer)", icon=":material/view_comfy:"),
    st.Page(str(PAGE_DIR / "positions.py"), title="Positions (PanopticFCN)", icon=":material/my_location:"),
    st.Page(str(PAGE_DIR / "points.py"), title="Points (PointRend)", icon=":material/scatter_plot:"),
    st.Page(str(PAGE_DIR / "attribution.py"), title="Attribution", icon=":material/local_fire_department:"),
    st.Page(str(PAGE_DIR / "dataset.py"), title="Dataset", icon=":material/dataset:"),
    st.Page(str(PAGE_DIR / "models.py"), title="Models & speed", icon=":material/speed:"),
    st.Page(str(PAGE_DIR / "about.py"), title="About", icon=":material/info:"),
]
nav = st.navigation(PAGES)
sidebar.build_context()
nav.run()
