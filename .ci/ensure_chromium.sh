#!/usr/bin/env bash
# Headless Chromium for tests/test_dashboard_browser.py (the `stream --serve` page in a real
# browser). Idempotent: returns at once when a Chromium is on PATH. Installs Debian's
# `chromium` with apt when running as root (CI: a fresh Debian-like machine); elsewhere it
# says how, and the browser test skips (make test sets ANYECG_REQUIRE_BROWSER=1 as root,
# where a missing browser then fails the test instead).
set -euo pipefail
for exe in chromium chromium-browser google-chrome; do
    if command -v "$exe" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no chromium on PATH; the dashboard browser test will skip (install: apt-get install chromium)" >&2
    exit 0
fi
echo "installing chromium (headless browser for tests/test_dashboard_browser.py)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends chromium >/dev/null; }
# A fresh machine may have no package lists yet: update once, then retry. A failed install
# (no network) does not stop the suite: the browser test then fails alone, saying why.
if ! { apt_install || { apt-get update -q >/dev/null && apt_install; }; }; then
    echo "warning: could not install chromium with apt-get; the dashboard browser test will fail" >&2
fi
