"""Models page: the registry of named configurations and their parameter counts per module."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from fapn_core.models.zoo import build_model, count_parameters, list_models

st.title("Models")
st.caption("Every registered configuration: `<neck>_<backbone>_<head>`. Counts are computed from the built modules.")


@st.cache_data(show_spinner="Counting parameters …")
def parameter_table(pattern: str) -> pd.DataFrame:
    rows = []
    for name in list_models(pattern):
        model = build_model(name)
        rows.append({
            "model": name,
            "backbone (M)": count_parameters(model, "backbone.") / 1e6,
            "neck (M)": count_parameters(model, "neck.") / 1e6,
            "head (M)": count_parameters(model, "head.") / 1e6,
            "total (M)": count_parameters(model) / 1e6,
        })
    return pd.DataFrame(rows)


pattern = st.text_input("Filter", value="r50_pointrend")
st.dataframe(parameter_table(pattern), hide_index=True, width="stretch")
