"""`stream --serve` in a real browser (issue 16 item 5): headless Chromium (Debian's
`chromium`; `make test` installs it when missing, .ci/ensure_chromium.sh) opens the page of
a running sim-polar stream, driven over the Chrome DevTools Protocol with aiohttp (no
selenium/playwright). At two moments it reads what the page shows: the ECG trace moved on
(newer samples, different pixels), the estimates updated and equal the stream's own JSONL
line for the window shown, the events list has the link loss and the reconnect; no script
error, no request to anywhere but the device; on a phone-sized screen nothing overflows.
Screenshots (desktop and phone) are kept in the test's tmp dir (path printed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_serve import ServedStream, stream_args, write_interval_model

aiohttp = pytest.importorskip("aiohttp")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# What the page shows, read from its DOM (app.js mirrors its state on data-* attributes).
STATE_JS = """(() => {
  const c = document.getElementById("ecg");
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let ink = 0, hash = 0;
  for (let i = 0; i < img.length; i += 4) {
    if (img[i + 2] > 120 && img[i] < 90) ink++;           // the blue trace, not the grid
    hash = (hash * 31 + img[i + 2] + 7 * img[i + 3]) | 0;
  }
  const rows = [...document.querySelectorAll("#labs-body tr[data-lab]")].map((r) => ({
    lab: r.dataset.lab, p: r.dataset.p, status: r.dataset.status || null,
    shown: r.querySelector(".p").textContent, flag: r.querySelector(".flag").textContent,
    interval: r.querySelector(".ivtext").textContent }));
  const d = document.body.dataset;
  return JSON.stringify({ ws: d.ws, windows: +d.windows, lastWindowT: +d.lastWindowT,
    samples: +d.ecgSamples, tLast: +c.dataset.tLast, drawn: +c.dataset.drawn, frames: +d.frames,
    ink, hash, rows, labsT: document.getElementById("labs-t").textContent,
    quality: document.getElementById("quality").textContent,
    hr: document.getElementById("hr").textContent,
    latency: document.getElementById("lat").textContent,
    link: document.getElementById("link").textContent,
    events: [...document.querySelectorAll("#events li .kind")].map((k) => k.textContent),
    disclaimer: document.getElementById("disclaimer").textContent,
    scrollW: document.documentElement.scrollWidth, innerW: window.innerWidth });
})()"""


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def devtools_port(tmp_path):
    """A headless Chromium with the DevTools protocol on a free port (its own profile)."""
    exe = _browser()
    if exe is None:
        msg = "chromium not installed (make test installs it: .ci/ensure_chromium.sh)"
        if os.environ.get("ANYECG_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("w")
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1000,1200", "about:blank"],
        stdout=log, stderr=log,
    )  # fmt: skip
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (active.exists() and active.read_text().strip()) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    try:
        assert active.exists(), (tmp_path / "chromium.log").read_text()[-2000:]
        yield int(active.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self._id = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id"), None)
            if fut is not None:
                fut.set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, **params) -> dict:
        self._id += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        assert "error" not in reply, (method, reply)
        return reply["result"]

    async def state(self, loading: bool = False) -> dict | None:
        r = await self.call("Runtime.evaluate", expression=STATE_JS, returnByValue=True)
        if "exceptionDetails" in r and loading:
            return None  # (the page is still loading: no #ecg yet)
        assert "exceptionDetails" not in r, r
        return json.loads(r["result"]["value"])

    async def wait_for(self, what: str, cond, timeout_s: float = 40.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            st = await self.state(loading=True)
            if st is not None and cond(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"page never showed {what}: {st}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> int:
        r = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        data = base64.b64decode(r["data"])
        path.write_bytes(data)
        return len(data)


async def _drive(port: int, url: str, shots: Path) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = DevTools(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Page.navigate", url=url)
            first = await cdp.wait_for("a window", lambda s: s["windows"] >= 1 and s["drawn"] > 0)
            second = await cdp.wait_for(
                "newer windows", lambda s: s["windows"] >= first["windows"] + 2
            )
            # The simulated link drops at 20 s of stream: the page lists it and the reconnect.
            third = await cdp.wait_for(
                "the link loss and the reconnect",
                lambda s: {"disconnect", "reconnect"} <= set(s["events"]),
            )
            await asyncio.sleep(0.5)
            sizes = {"desktop": await cdp.screenshot(shots / "dashboard.png")}
            await cdp.call(
                "Emulation.setDeviceMetricsOverride", width=390, height=844,
                deviceScaleFactor=2, mobile=True,
            )  # fmt: skip
            await asyncio.sleep(0.6)
            phone = await cdp.state()
            sizes["phone"] = await cdp.screenshot(shots / "dashboard_phone.png")
            events = list(cdp.events)
            cdp._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cdp._reader
    return {"first": first, "second": second, "third": third, "phone": phone,
            "events": events, "sizes": sizes}  # fmt: skip


def test_dashboard_in_headless_chromium(devtools_port, shared_data, tmp_path):
    model = write_interval_model(tmp_path / "tiny.onnx")
    jsonl = tmp_path / "s.jsonl"
    args = stream_args(model, shared_data / "mitdb" / "100", jsonl, "0")
    args += ["--faults", "disconnect=20"]
    t0 = time.monotonic()
    s = ServedStream(args)
    try:
        seen = asyncio.run(_drive(devtools_port, s.url, tmp_path))
    finally:
        rc, _, err = s.stop()
    wall_s = time.monotonic() - t0
    print(f"screenshots: {tmp_path / 'dashboard.png'}, {tmp_path / 'dashboard_phone.png'}")
    assert rc == 130 and "Traceback" not in err, err
    first, second, third, phone = seen["first"], seen["second"], seen["third"], seen["phone"]

    # Connected, the disclaimer shown.
    assert first["ws"] == "open" and "not diagnoses" in first["disclaimer"]
    # The trace: drawn, and moved on between the two moments (newer samples, other pixels).
    for st in (first, second):
        assert st["drawn"] > 300 and st["ink"] > 500, st
    assert second["tLast"] >= first["tLast"] + 1.0
    assert second["hash"] != first["hash"] and second["frames"] > first["frames"]
    # The estimates: updated, and what the page shows is the stream's line for that window.
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    by_t = {x["t"]: x for x in lines if "latency_ms" in x}
    assert second["windows"] > first["windows"] and second["labsT"] != first["labsT"]
    for st in (first, second):
        labs = by_t[st["lastWindowT"]]["labs"]
        rows = {r["lab"]: r for r in st["rows"]}
        assert set(rows) == set(labs)
        for lab, e in labs.items():
            assert float(rows[lab]["p"]) == e["probability"]
            assert rows[lab]["shown"] == f"{e['probability']:.3f}"
            assert rows[lab]["status"] == e["status"]
        assert rows["potassium"]["flag"] == "not calibrated"
        assert rows["glucose"]["flag"] in ("normal", "ABNORMAL")
        lo, hi = labs["glucose"]["interval"]
        assert rows["glucose"]["interval"] == f"{lo:.2f}\u2013{hi:.2f} \u00b7 thr 0.60"
        assert st["quality"] in ("good", "rejected")
        assert st["hr"].isdigit() and float(st["latency"]) > 0
    assert third["events"][0] in ("reconnect", "gap", "disconnect")  # newest first

    # Nothing from anywhere else, no script error or console error.
    origin = s.url.rstrip("/")
    ws_origin = origin.replace("http://", "ws://")
    requests = [e["params"]["request"]["url"] for e in seen["events"]
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip
    assert requests and all(
        u.startswith((origin, ws_origin, "data:", "about:")) for u in requests
    ), requests
    errors = [e for e in seen["events"] if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]  # fmt: skip
    assert not errors, errors

    # A phone: the layout fits its width (no sideways scrolling), the page still live.
    assert phone["innerW"] == 390 and phone["scrollW"] <= phone["innerW"], phone
    assert phone["ws"] == "open" and phone["ink"] > 300
    assert seen["sizes"]["desktop"] > 10_000 and seen["sizes"]["phone"] > 10_000
    assert wall_s < 60
