"""The wheel CI builds (``maturin build --release``): one abi3 manylinux
wheel that installs into a fresh venv, with no Rust toolchain on PATH, and
whose ``sipstream`` command runs the demo call and prints the version."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import free_tcp_port, media_range
from .test_cli import _get, _stop, _wait_http

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# What a machine without Rust has: the venv's scripts and the system's.
NO_CARGO_PATH = "/usr/bin:/bin"

# Building from nothing (fat LTO) takes minutes; the wheel normally reuses
# the release artifacts that the test command's `pip install .` left in target/.
pytestmark = pytest.mark.timeout(1500)


def cargo_version() -> str:
    """The version in Cargo.toml's [package] table: the one place it is written."""
    package = (ROOT / "Cargo.toml").read_text().split("[package]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
    assert found, "Cargo.toml's [package] has no version"
    return found.group(1)


def clean_env(path: str) -> dict[str, str]:
    """This process's environment with ``path`` as PATH and nothing that
    points at the project's venv, its sources or a sipstream setting."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("SIPSTREAM_")}
    env["PATH"] = path
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    # The interpreter `pip install .` built with (the venv's python3, from
    # pip's shebang): cargo then finds the same PyO3 configuration and
    # reuses target/ instead of rebuilding the crate.
    python = VENV_BIN / "python3" if (VENV_BIN / "python3").exists() else Path(sys.executable)
    start = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "maturin"), "build", "--release", "--interpreter", str(python), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"maturin build --release: {time.monotonic() - start:.1f} s")
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the wheel installed;
    its dependencies come from PyPI (or pip's cache)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    start = time.monotonic()
    result = subprocess.run(
        [str(root / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=900, env=clean_env(f"{root / 'bin'}:{NO_CARGO_PATH}"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"pip install of the wheel and its dependencies: {time.monotonic() - start:.1f} s")
    return root


def test_wheel_is_one_abi3_manylinux_wheel_with_the_cargo_version_and_license(wheel: Path) -> None:
    name = wheel.name
    assert name.startswith(f"sipstream-{cargo_version()}-"), name
    assert "-abi3-" in name and "manylinux" in name, name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"sipstream-{cargo_version()}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        licenses = [n for n in names if n.startswith(f"{dist_info}/") and n.endswith("/LICENSE")]
        assert licenses, names
        assert "Apache License" in archive.read(licenses[0]).decode()
    assert f"\nVersion: {cargo_version()}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata, metadata[:2000]
    assert any(n.startswith("sipstream/_core") and n.endswith(".abi3.so") for n in names), names


def test_installed_command_prints_the_cargo_version_without_cargo_on_path(venv: Path, tmp_path: Path) -> None:
    env = clean_env(f"{venv / 'bin'}:{NO_CARGO_PATH}")
    result = subprocess.run([str(venv / "bin" / "sipstream"), "--version"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sipstream {cargo_version()}"
    # the package comes from the venv, not from the sources beside the tests
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sipstream; print(sipstream.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=True)
    assert where.stdout.strip().startswith(str(venv)), where.stdout


def test_installed_demo_streams_the_loopback_call_without_cargo_on_path(venv: Path, tmp_path: Path) -> None:
    port = free_tcp_port()
    first, last = media_range()
    env = clean_env(f"{venv / 'bin'}:{NO_CARGO_PATH}")
    env.update({"SIPSTREAM_MEDIA_PORT_FROM": str(first), "SIPSTREAM_MEDIA_PORT_TO": str(last),
                "SIPSTREAM_WEBRTC_PORT": "0", "SIPSTREAM_WS_PORT": "0", "SIPSTREAM_HLS_PORT": "0",
                "SIPSTREAM_RTSP_PORT": "0"})
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "demo.log", "wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "sipstream"), "demo", "--http-port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        _wait_http(f"{base}/health", proc, timeout=60)
        deadline = time.monotonic() + 30
        call: dict = {}
        while time.monotonic() < deadline and call.get("status") != "ESTABLISHED":
            code, body = _get(f"{base}/rest-api/call/find", {"callId": "demo-call"})
            call = body[0] if code == 200 else {}  # type: ignore[index]
            time.sleep(0.2)
        assert call.get("status") == "ESTABLISHED", call
        deadline = time.monotonic() + 15
        stream: dict = {}
        while time.monotonic() < deadline and stream.get("status") != "PUBLISHING":
            code, body = _get(f"{base}/rest-api/stream/find", {"name": "demo"})
            stream = body[0] if code == 200 else {}  # type: ignore[index]
            time.sleep(0.2)
        assert stream.get("status") == "PUBLISHING" and stream["videoCodec"] == "H264", stream
    finally:
        code = _stop(proc, signal.SIGINT)
    output = (tmp_path / "demo.log").read_text()
    assert code == 0, output
    assert f"{base}/player?stream=demo" in output
    assert "FINISH" in output, output  # the live call was hung up on the way out
