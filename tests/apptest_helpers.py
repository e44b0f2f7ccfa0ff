"""AppTest helpers shared by the app's test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
PAGES = ["compare", "offsets", "channels", "boundaries", "small_objects", "queries", "positions", "points",
         "attribution", "dataset", "models",
         "about"]


def app(timeout: float = 300):
    """A fresh AppTest of the whole app (sidebar + navigation)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=timeout)


def upload_checkpoint(at, slot: str, path: Path):
    """Model ``slot`` ("a"/"b") from a checkpoint file, through the sidebar's uploader."""
    at.radio(key=f"src_{slot}").set_value("Upload checkpoint").run()
    at.file_uploader(key=f"upload_{slot}").upload(path.name, path.read_bytes()).run()
    return at


def no_errors(at) -> None:
    """No exception and no st.error on the current page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def visit_every_page(at) -> None:
    """Render every page in turn; none may raise or show an error."""
    for page in PAGES:
        at.switch_page(f"../pages/{page}.py").run()
        no_errors(at)


def numbers(column) -> np.ndarray:
    """A shown table column as floats: "—" (no value, issue #25) as NaN."""
    return np.array([np.nan if v in ("—", None) else float(v) for v in column], float)


def every_page_then(page: str, a: Path | None = None, b: Path | None = None):
    """A fresh app with checkpoint ``a`` and/or ``b`` uploaded (the bundled defaults otherwise), every page visited
    without an error, then ``page`` (e.g. ``"points"``) rendered: the AppTest, on that page."""
    at = app().run()
    for slot, path in (("a", a), ("b", b)):
        if path is not None:
            upload_checkpoint(at, slot, path)
    no_errors(at)
    visit_every_page(at)
    at.switch_page(f"../pages/{page}.py").run()
    no_errors(at)
    return at
