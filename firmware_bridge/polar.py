"""Old import path: the polar family lives in `anyecg_edge.firmware_bridge.devices.polar`.

This name is that module itself (every name, private ones included, is the same object).
"""

import sys

from anyecg_edge.firmware_bridge.devices import polar as _module

sys.modules[__name__] = _module
