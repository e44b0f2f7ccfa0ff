"""Streamlit pages render with AppTest and show the library's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fapn_core.models.zoo import build_model, count_parameters

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def test_models_page_renders_parameter_table():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    df = at.dataframe[0].value
    row = df[df["model"] == "fapn_r50_pointrend"].iloc[0]
    assert row["total (M)"] == pytest.approx(count_parameters(build_model("fapn_r50_pointrend")) / 1e6)
