"""Skip accounting for the tests that need the real recordings of ../shared/data.

Not a test module: tests/conftest.py imports its hooks. Every run ends with the count of
tests that needed the recordings and ran, and of those skipped because they are absent
(without it a green run could mean that a fifth of the suite never ran). With
``ANYECG_REQUIRE_DATA=1`` a run that skipped any of them fails (exit status 1, one line):
``make test`` sets it wherever ``../shared/data`` exists, so a checkout next to the
recordings cannot pass on a partial suite, while a machine without them (the data README:
"skip cleanly only where the folder is truly absent") gets a partial run, said so in red.

A test "needs the recordings" when it uses the ``shared_data`` or ``art`` fixture or the
``needs_data`` marker (tests/recordings.py); a skip is a data skip when its reason names
the missing recordings ("real recordings ...").
"""

from __future__ import annotations

import os

import pytest

REQUIRE = "ANYECG_REQUIRE_DATA"
_DATA_FIXTURES = {"shared_data", "art"}
_REASON = "real recordings"
_PROPERTY = "needs_real_recordings"

_needs: set[str] = set()
_counts = {"ran": 0, "skipped": 0}


def _needs_recordings(item: pytest.Item) -> bool:
    if _DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return any(_REASON in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(session, config, items) -> None:
    for item in items:
        if _needs_recordings(item):
            _needs.add(item.nodeid)
            # The mark travels with the test's reports: under pytest-xdist the counting
            # process (the controller) never collects, it only receives reports.
            item.user_properties.append((_PROPERTY, True))


def pytest_runtest_logreport(report) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if _REASON in reason:
            _counts["skipped"] += 1
    elif report.when == "call" and (
        report.nodeid in _needs
        or any(tuple(p) == (_PROPERTY, True) for p in getattr(report, "user_properties", ()))
    ):
        _counts["ran"] += 1


def _required() -> bool:
    return os.environ.get(REQUIRE, "") not in ("", "0")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _counts["skipped"] and _required() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    tr, skipped = terminalreporter, _counts["skipped"]
    if not (_counts["ran"] or skipped):
        return
    line = f"real recordings (../shared/data): {_counts['ran']} tests needed them and ran"
    if skipped:
        line += f", {skipped} skipped because they are absent"
        if _required():
            tr.write_line(line + f": the run FAILS ({REQUIRE}=1)", red=True, bold=True)
        else:
            tr.write_line(
                line + f": a PARTIAL suite ({REQUIRE}=1 makes this fail)", red=True, bold=True
            )
    else:
        tr.write_line(line)
