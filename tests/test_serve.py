"""`stream --serve`: the live dashboard's server (issue 16 item 5), over real sockets.

A sim-polar stream (a simulated Polar H10 over the in-process GATT link) runs in its own
process with ``--serve``; an aiohttp client reads the page and its assets and the WebSocket
feed: ECG samples that move on, window estimates equal to the stream's own JSONL lines,
the per-lab thresholds and intervals, counters, and the end of the stream. Address errors,
a port in use and a missing aiohttp each end in one line with their exit status."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_stream import LABS, write_tiny_onnx

aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("bumble")

from anyecg_edge.firmware_bridge.sequencer import Block  # noqa: E402

from anyecg_edge.stream.serve import (  # noqa: E402
    DEFAULT_HOST,
    Dashboard,
    ServeAddress,
    _refused,
    parse_address,
)

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from anyecg_edge.cli import main; main()"]
URL_LINE = re.compile(r"^dashboard: (http://\S+/)$", re.M)
LEVEL = 0.9


def write_interval_model(path: Path) -> Path:
    """The tiny stand-in with two calibrated labs, bootstrap refits (an interval) and a
    threshold each; potassium and hemoglobin stay 'not calibrated'."""
    write_tiny_onnx(path)
    manifest = Path(str(path) + ".manifest.json")
    meta = json.loads(manifest.read_text())
    rng = np.random.default_rng(1)
    meta["thresholds"] = {"glucose": 0.6, "sodium": 0.5}
    meta["calibration"] = {"glucose": [1.0, 0.0], "sodium": [1.0, 0.0]}
    meta["calibrated"] = {lab: lab in ("glucose", "sodium") for lab in LABS}
    meta["calibration_bootstrap"] = {
        lab: [[float(a), float(b)] for a, b in zip(rng.uniform(0.7, 1.3, 24), rng.normal(0, 0.3, 24), strict=True)]
        for lab in ("glucose", "sodium")
    }  # fmt: skip
    meta["uncertainty"] = {"level": LEVEL}
    manifest.write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_interval_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def record_path(shared_data) -> Path:
    return shared_data / "mitdb" / "100"


class ServedStream:
    """`anyecg-edge stream ... --serve` in a child process; ``url`` once it listens."""

    def __init__(self, args: list[str], timeout_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "stream", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.stderr: list[str] = []
        found = threading.Event()
        self.url: str | None = None

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                m = URL_LINE.match(line.strip())
                if m:
                    self.url = m.group(1)
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        found.wait(timeout_s)
        if self.url is None:
            self.stop()
            raise AssertionError(f"no dashboard URL: {''.join(self.stderr)}")

    def stop(self, sig: int | None = signal.SIGINT) -> tuple[int, str, str]:
        """Send ``sig`` (None: wait for the stream's own end) and collect the outcome."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._reader.join(5)
        return self.proc.returncode, out, "".join(self.stderr)


def stream_args(model_path: Path, record_path: Path, jsonl: Path, serve: str) -> list[str]:
    return ["--source", f"sim-polar:{record_path}", "--model", str(model_path), "--speed", "5",
            "--duration", "600", "--no-live", "--jsonl", str(jsonl), "--serve", serve,
            "--threads", "1"]  # fmt: skip


async def _collect(ws, done, timeout_s: float) -> list[dict]:
    """Messages from ``ws`` until ``done(msgs)``, the socket closes or ``timeout_s``."""
    msgs: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(msgs):
        try:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        msgs.append(json.loads(msg.data))
    return msgs


def _windows_then_status(n: int):
    """Done after ``n`` windows and the counters sent after the last of them."""
    return lambda msgs: (
        sum(m["type"] == "window" for m in msgs) >= n and msgs[-1]["type"] == "status"
    )


async def _visit(s: ServedStream) -> tuple[dict, list[dict], list[dict]]:
    """The page and its assets; a page's feed for 4 windows; a page that connects later,
    kept open while the stream is stopped (SIGINT)."""
    url = s.url
    page = {}
    async with aiohttp.ClientSession() as http:
        for name in ("", "app.js", "style.css", "state.json", "nothere.js", "../pyproject.toml"):
            async with http.get(url + name) as r:
                page[name] = (r.status, r.headers.get("Content-Type", ""), await r.text())
        # A DNS-rebound name, and another site's page opening the feed: refused.
        async with http.get(url, headers={"Host": "evil.example"}) as r:
            page["rebound"] = (r.status, "", await r.text())
        try:
            async with http.ws_connect(url + "ws", headers={"Origin": "http://evil.example"}):
                page["cross-site ws"] = (101, "", "")
        except aiohttp.WSServerHandshakeError as exc:
            page["cross-site ws"] = (exc.status, "", "")
        async with http.ws_connect(url + "ws") as ws:
            first = await _collect(ws, _windows_then_status(4), 40)
        async with http.ws_connect(url + "ws") as ws:
            late = await _collect(ws, _windows_then_status(1), 20)
            s.proc.send_signal(signal.SIGINT)
            late += await _collect(ws, lambda msgs: False, 30)  # until the server closes
    return page, first, late


def test_served_stream_feeds_the_page(model_path, record_path, tmp_path):
    jsonl = tmp_path / "s.jsonl"
    s = ServedStream(stream_args(model_path, record_path, jsonl, "127.0.0.1:0"))
    try:
        assert s.url.startswith(f"http://{DEFAULT_HOST}:")
        page, msgs, late = asyncio.run(_visit(s))
    finally:
        rc, out, err = s.stop()
    assert rc == 130, err
    assert "Traceback" not in err

    # The page: every asset from this server, small; nothing else served.
    html = page[""][2]
    assert page[""][0] == 200 and page[""][1].startswith("text/html")
    assert page["app.js"][0] == 200 and page["app.js"][1].startswith("text/javascript")
    assert page["style.css"][0] == 200 and page["style.css"][1].startswith("text/css")
    assert page["state.json"][0] == 200 and json.loads(page["state.json"][2])[0]["type"] == "hello"
    assert page["nothere.js"][0] == 404 and page["../pyproject.toml"][0] == 404
    assert page["rebound"][0] == 403 and "127.0.0.1/localhost only" in page["rebound"][2]
    assert page["cross-site ws"][0] == 403
    assert "Research use only" in html and "diagnos" in html
    for name in ("", "app.js", "style.css"):
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page[name][2]), name
        assert "cdn" not in page[name][2].lower()
    assert sum(len(page[n][2].encode()) for n in ("", "app.js", "style.css")) < 40_000

    # (a page that connects while the model loads gets a second hello with the labs)
    types = [m["type"] for m in msgs]
    hello = [m for m in msgs if m["type"] == "hello"][-1]
    assert msgs.index(hello) < types.index("ecg")  # the labs before any data
    assert hello["source"].startswith("sim-polar:")
    labs = {x["lab"]: x for x in hello["labs"]}
    assert list(labs) == LABS
    assert labs["glucose"]["threshold"] == 0.6 and labs["sodium"]["threshold"] == 0.5
    assert labs["potassium"]["threshold"] is None and not labs["potassium"]["calibrated"]
    assert hello["interval_level"] == LEVEL and "not diagnoses" in hello["disclaimer"]

    # ECG: the H10's 130 Hz, in time order, moving on, finite mV values.
    chunks = [c for m in msgs if m["type"] == "ecg" for c in m["chunks"]]
    assert len(chunks) >= 5
    t_ends = [c["t0"] + len(c["y"]) / c["fs"] for c in chunks]
    assert t_ends == sorted(t_ends) and t_ends[-1] - t_ends[0] > 3.0
    assert {round(c["fs"]) for c in chunks} == {130}
    y = np.array([v for c in chunks for v in c["y"]], dtype=float)
    assert np.isfinite(y).all() and y.max() - y.min() > 0.5  # QRS complexes, in mV

    # Estimates: each window the page gets is the stream's JSONL line for that window.
    windows = [m for m in msgs if m["type"] == "window"]
    assert len(windows) >= 4 and [w["t"] for w in windows] == sorted({w["t"] for w in windows})
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    by_t = {x["t"]: x for x in lines if "latency_ms" in x}
    for w in windows:
        assert w["labs"] == by_t[w["t"]]["labs"] and w["quality"] == by_t[w["t"]]["quality"]
    last = windows[-1]["labs"]
    assert last["glucose"]["status"] in ("normal", "abnormal")
    lo, hi = last["glucose"]["interval"]
    assert 0 <= lo <= hi <= 1
    assert last["potassium"] == {**last["potassium"], "abnormal": None, "status": "not calibrated"}
    assert windows[-1]["labs"] != windows[0]["labs"]  # smoothed estimates move

    status = [m for m in msgs if m["type"] == "status"]
    assert status[-1]["link"] == "streaming"
    assert status[-1]["counts"]["windows"] >= len(windows)
    assert status[-1]["latency_ms"]["n"] >= len(windows) and status[-1]["latency_ms"]["p50"] > 0
    assert any(m.get("event") == "connected" for m in msgs if m["type"] == "event")
    # The simulated H10's Heart Rate service: the device's HR, shown, not listed as an event.
    hr = [m for m in msgs if m.get("event") == "heart_rate"]
    assert hr and all(30 <= m["hr_bpm"] <= 200 for m in hr)
    assert status[-1]["hr_device"]["event"] == "heart_rate"

    # A later page: a snapshot of the last 10 s (not the whole stream), then the live feed,
    # then the end of the stream with its summary before the server closes.
    assert [m["type"] for m in late[:2]] == ["hello", "ecg"]
    snap = late[1]["chunks"]
    span = snap[-1]["t0"] + len(snap[-1]["y"]) / snap[-1]["fs"] - snap[0]["t0"]
    assert 9.0 <= span <= 10.7 and snap[0]["t0"] > chunks[0]["t0"]
    listed = [e["event"] for m in late if m["type"] == "events" for e in m["events"]]
    assert "connected" in listed and "heart_rate" not in listed
    end = [m for m in late if m["type"] == "end"]
    assert len(end) == 1 and end[0]["summary"]["interrupted"]
    assert end[0]["summary"]["windows"] == lines[-1]["summary"]["windows"]
    assert late[-1]["type"] in ("end", "status")


# --- errors: one line, its status ---------------------------------------------------------
def _cli(*args: str):
    from click.testing import CliRunner

    from anyecg_edge.cli import cli

    return CliRunner().invoke(cli, ["-q", *args])


def _one_error_line(res) -> str:
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("serve", "words"),
    [
        ("http", "whole number 0-65535"),
        ("70000", "whole number 0-65535"),
        ("127.0.0.1:", "whole number"),
        ("a b:8080", "not a host name"),
        ("0.0.0.0:8080", "--serve-public"),
        ("192.168.1.20:8080", "--serve-public"),
    ],
)
def test_bad_address_is_a_usage_error(model_path, record_path, serve, words):
    res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
               "--serve", serve)  # fmt: skip
    assert res.exit_code == 2, res.stderr
    line = _one_error_line(res)
    assert "--serve" in line and words in line


def test_serve_public_alone_is_a_usage_error(model_path, record_path):
    res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
               "--serve-public")  # fmt: skip
    assert res.exit_code == 2 and "--serve-public applies with --serve" in _one_error_line(res)


def test_port_in_use_and_foreign_host_fail_in_one_line(model_path, record_path, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "x.jsonl"
        out.write_text('{"kept": "an earlier session"}\n')
        res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
                   "--serve", f"127.0.0.1:{port}", "--jsonl", str(out))  # fmt: skip
    assert res.exit_code == 7, res.stderr
    line = _one_error_line(res)
    assert line == (
        f"Error: --serve 127.0.0.1:{port}: cannot listen (Address already in use, EADDRINUSE)"
    )
    # Refused before anything is written: an earlier session's JSONL is left as it was
    # (it was emptied when the file was opened).
    assert out.read_text() == '{"kept": "an earlier session"}\n'
    # The session that runs empties it first: its own lines only.
    res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
               "--duration", "12", "--speed", "0", "--jsonl", str(out))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    lines = out.read_text().splitlines()
    assert "start" in json.loads(lines[0]) and "summary" in json.loads(lines[-1])
    assert all("kept" not in line for line in lines)
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: cannot be bound.
    res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
               "--serve", "192.0.2.1:8080", "--serve-public")  # fmt: skip
    assert res.exit_code == 7, res.stderr
    assert "--serve 192.0.2.1:8080: cannot listen (Cannot assign" in _one_error_line(res)


def test_without_aiohttp_only_serve_fails(model_path, record_path, monkeypatch):
    """A device install without aiohttp: the stream modules import and run; --serve says
    what to install, in one line, before any work."""
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "import anyecg_edge.stream.serve, anyecg_edge.stream.session, anyecg_edge.commands.stream\n"
        "print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "ok", res.stderr
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # find_spec: not installed
    res = _cli("stream", "--source", f"file:{record_path}", "--model", str(model_path),
               "--serve", "0")  # fmt: skip
    assert res.exit_code == 1
    assert "pip install 'anyecg-edge[serve]'" in _one_error_line(res)


# --- the observer itself ------------------------------------------------------------------
def test_refused_requests():
    local, lan = ServeAddress("127.0.0.1", 8080), ServeAddress("0.0.0.0", 8080)
    assert _refused("127.0.0.1:8080", None, local) is None
    assert _refused("localhost:8080", "http://localhost:8080", local) is None
    assert _refused("[::1]:8080", None, local) is None
    assert _refused("attacker.example:8080", None, local)
    assert _refused("192.168.1.5:8080", "http://192.168.1.5:8080", lan) is None
    assert _refused("192.168.1.5:8080", "http://evil.example", lan)
    assert _refused("192.168.1.5:8080", "null", lan)


def test_parse_address():
    assert parse_address("8080") == ServeAddress("127.0.0.1", 8080)
    assert parse_address("localhost:0") == ServeAddress("localhost", 0)
    assert parse_address("[::1]:9") == ServeAddress("::1", 9)
    assert parse_address("8080", public=True) == ServeAddress("0.0.0.0", 8080)
    assert parse_address("192.168.1.20:80", public=True).loopback is False
    assert parse_address("[::1]:9").url(1234) == "http://[::1]:1234/"
    for bad in ("", ":", "-1", "1.5", "host:port", "[::1]", "65536"):
        with pytest.raises(ValueError):
            parse_address(bad, public=True)


def _block(t0: float, n: int, fs: float, seg: int = 0) -> Block:
    y = np.sin(np.arange(n) / 7.0).astype(np.float32)
    return Block(y, np.zeros(n, np.int32), seg, 0, t0, fs, time.perf_counter_ns())


def test_dashboard_keeps_10_s_decimates_and_never_raises():
    d = Dashboard(ServeAddress("127.0.0.1", 0), source="x")
    fs = 500.0
    for i in range(300):  # 30 s in 0.1 s blocks
        d.push_block(_block(i * 0.1, 50, fs))
    sent = d._take_pending()  # (what the server's next flush sends: bounded to 10 s too)
    snap = {m["type"]: m for m in d.snapshot()}
    chunks = snap["ecg"]["chunks"]
    assert sent == [{"type": "ecg", "chunks": chunks}]
    assert {c["fs"] for c in chunks} == {250.0}  # 500 Hz shown at every 2nd sample
    t = np.concatenate([c["t0"] + np.arange(len(c["y"])) / c["fs"] for c in chunks])
    assert np.allclose(np.diff(t), 1 / 250.0)  # phase kept across blocks: even spacing
    assert 9.9 <= t[-1] - t[0] <= 10.1
    d.update({"latency_ms": "not a number", "t": 1})  # a malformed item: dropped, no raise
    d.update({"event": "gap", "t": 3.0, "missing": 12})
    d.update({"event": "disconnect", "t": 4.0, "reason": "x"})
    sent = d._take_pending()
    assert [m.get("event") for m in sent if m["type"] == "event"] == ["gap", "disconnect"]
    assert d.status()["link"] == "reconnecting"
    # Sent once: a page that connects now gets the events in its snapshot, not again live.
    assert [m["type"] for m in d.snapshot()] == ["hello", "ecg", "events", "status"]
    assert d._take_pending() == []


def _stalled_page(port: int) -> socket.socket:
    """A page that opens the feed and then never reads (a phone gone to sleep): the
    WebSocket handshake by hand on a socket with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_stalled_page_is_dropped_and_never_slows_the_stream():
    d = Dashboard(ServeAddress("127.0.0.1", 0), source="x")
    d.start()
    try:
        sock = _stalled_page(d.port)
        deadline = time.monotonic() + 30
        slowest_s = 0.0
        payload = "x" * 1000
        while d.pages_dropped == 0 and time.monotonic() < deadline:
            for i in range(500):  # ~0.5 MB of events per round, faster than any page reads
                t0 = time.perf_counter()
                d.update({"event": "drop", "t": float(i), "note": payload})
                slowest_s = max(slowest_s, time.perf_counter() - t0)
            time.sleep(0.05)
        assert d.pages_dropped == 1 and d.pages_open == 0
        assert slowest_s < 0.05  # the stream's side only appends under a lock
        sock.close()
    finally:
        d.close()
