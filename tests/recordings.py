"""Where the real recordings of ../shared/data live, and a skip marker for tests that need
them (they are never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyecg_edge.datadir import data_dir

DATA = data_dir()  # --data-dir / $ANYECG_DATA / beside the checkout
CINC = DATA / "cinc2021"
MITDB = DATA / "mitdb" / "100"

needs_data = pytest.mark.skipif(
    not (CINC.is_dir() and Path(str(MITDB) + ".hea").is_file()),
    reason=f"real recordings not found under {DATA}",
)
