"""The installed ``sipstream`` command: serve and demo start, answer, and
shut down cleanly on SIGTERM/SIGINT; bad settings fail at start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .conftest import free_tcp_port

SIPSTREAM = shutil.which("sipstream", path=os.path.dirname(sys.executable)) or "sipstream"


def _get(url: str, body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as res:
            text = res.read().decode()
            return res.status, json.loads(text) if text.startswith(("{", "[")) else text
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def _start(*args: str, tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / "server.log", "wb")
    return subprocess.Popen([SIPSTREAM, *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "SIPSTREAM_MEDIA_PORT_FROM": "45000",
                                 "SIPSTREAM_MEDIA_PORT_TO": "45199", "SIPSTREAM_WEBRTC_PORT": "0",
                                 "SIPSTREAM_WS_PORT": "0", "SIPSTREAM_HLS_PORT": "0", "SIPSTREAM_RTSP_PORT": "0"})


def _stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_answers_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = _start("serve", "--http-port", str(port), tmp_path=tmp_path)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        code, body = _get(f"http://127.0.0.1:{port}/health")
        assert code == 200 and body["status"] == "ok"  # type: ignore[index]
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
    assert "HTTP on" in (tmp_path / "server.log").read_text()


def test_serve_with_bad_config_fails_at_start_with_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "flashphoner.properties"
    config.write_text("# test\nmedia_port_from=not-a-number\n")
    result = subprocess.run([SIPSTREAM, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "media_port_from" in result.stderr and "integer" in result.stderr


def test_demo_places_a_call_to_the_builtin_callee_and_stops_on_sigint(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = _start("demo", "--http-port", str(port), tmp_path=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/health", proc)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != "ESTABLISHED":
            code, body = _get(f"{base}/rest-api/call/find", {"callId": "demo-call"})
            status = body[0]["status"] if code == 200 else None  # type: ignore[index]
            time.sleep(0.2)
        assert status == "ESTABLISHED"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            code, streams = _get(f"{base}/rest-api/stream/find", {"name": "demo"})
            if code == 200 and streams[0]["status"] == "PUBLISHING":  # type: ignore[index]
                break
            time.sleep(0.2)
        assert streams[0]["videoCodec"] == "H264"  # type: ignore[index]
    finally:
        code = _stop(proc, signal.SIGINT)
    output = (tmp_path / "server.log").read_text()
    assert code == 0, output
    assert f"{base}/player?stream=demo" in output
    assert "FINISH" in output  # the live call was hung up on shutdown


def test_bad_flags_fail_at_start(tmp_path: Path) -> None:
    result = subprocess.run([SIPSTREAM, "serve", "--http-port", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "http_port" in result.stderr
    result = subprocess.run([SIPSTREAM, "serve", "--ip", "not-an-ip"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "ip" in result.stderr


def test_version_flag_prints_the_package_version_which_is_cargo_tomls() -> None:
    import re

    import sipstream

    result = subprocess.run([sys.executable, "-m", "sipstream", "--version"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sipstream {sipstream.__version__}"
    package = (Path(__file__).resolve().parent.parent / "Cargo.toml").read_text().split("[package]", 1)[1]
    cargo = re.search(r'^version\s*=\s*"([^"]+)"', package.split("\n[", 1)[0], re.M)
    assert cargo and sipstream.__version__ == cargo.group(1)
