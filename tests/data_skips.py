"""Skip accounting for the tests that need the real recordings of ../shared/data.

Not a test module: tests/conftest.py imports its hooks. A run where tests were skipped
because the recordings are absent ends *failed* (exit status 1), with one line that says
how many, unless ``ANYECG_ALLOW_DATA_SKIPS=1`` accepts a partial run; every run ends with
the count of tests that needed the recordings and ran. (Without this a green run could
mean that a fifth of the suite never ran.)

A test "needs the recordings" when it uses the ``shared_data`` or ``art`` fixture or the
``needs_data`` marker (tests/recordings.py); a skip is a data skip when its reason names
the missing recordings ("real recordings ...").
"""

from __future__ import annotations

import os

import pytest

OPT_OUT = "ANYECG_ALLOW_DATA_SKIPS"
_DATA_FIXTURES = {"shared_data", "art"}
_REASON = "real recordings"

_needs: set[str] = set()
_counts = {"ran": 0, "skipped": 0}


def _needs_recordings(item: pytest.Item) -> bool:
    if _DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return any(_REASON in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(session, config, items) -> None:
    _needs.update(item.nodeid for item in items if _needs_recordings(item))


def pytest_runtest_logreport(report) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if _REASON in reason:
            _counts["skipped"] += 1
    elif report.when == "call" and report.nodeid in _needs:
        _counts["ran"] += 1


def _allowed() -> bool:
    return os.environ.get(OPT_OUT, "") not in ("", "0")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _counts["skipped"] and not _allowed() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    tr, skipped = terminalreporter, _counts["skipped"]
    if not (_counts["ran"] or skipped):
        return
    line = f"real recordings (../shared/data): {_counts['ran']} tests needed them and ran"
    if skipped:
        line += f", {skipped} skipped because they are absent"
        if _allowed():
            tr.write_line(line + f" (accepted: {OPT_OUT}=1)", yellow=True)
        else:
            tr.write_line(
                line + f": the run FAILS (a partial suite is not green; set {OPT_OUT}=1 to "
                "accept it)",
                red=True,
                bold=True,
            )
    else:
        tr.write_line(line)
