"""extract_windows must not build a view larger than its (n, win) result: on 32-bit ARM
(armhf) numpy refuses any view whose nominal size passes the address space, even one that
copies nothing, and a 30-min record's every-offset view is 9 GB. A zero-stride signal of
2**40 samples reproduces that limit on a 64-bit machine without using memory."""

import numpy as np
import pytest

from anyecg_edge.signal.windows import extract_windows

pytestmark = pytest.mark.device


def test_windows_of_a_huge_signal_are_a_small_view() -> None:
    fs = 500.0
    x = np.broadcast_to(np.float32(0.25), (2**40,))  # 4 TiB nominal, no memory
    windows, starts = extract_windows(x, fs, window_s=8388.608)  # 2**22 samples
    # every offset would be (2**40 - 2**22 + 1) x 2**22 x 4 bytes: past 2**63, refused
    assert windows.shape == (2**18, 2**22)
    assert starts[1] == 2**22 and starts[-1] == 2**40 - 2**22
    assert not windows.flags.writeable
    assert float(windows[-1, -1]) == 0.25
