"""Smoke tests of the RTMP test peer (tests/peers/nginx_rtmp.py) and the media checks
(tests/peers/avcheck.py), without sipstream.

nginx tests are marked ``peers`` and skip when nginx / the RTMP module (Debian ``nginx
libnginx-mod-rtmp``) or ffmpeg (Debian ``ffmpeg``) is missing.  The analyzer tests only need
PyAV + ffprobe.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import av
import numpy as np
import pytest

from tests.peers import avcheck
from tests.peers.fixtures import require
from tests.peers.nginx_rtmp import NginxRtmp, nginx_rtmp_missing


def require_nginx_rtmp() -> None:
    require(nginx_rtmp_missing())
    require_ffmpeg()


def require_ffmpeg() -> None:
    require(None if avcheck.ffmpeg_available() else "ffmpeg/ffprobe not installed (Debian package 'ffmpeg')")


@pytest.fixture
def nginx_rtmp_factory(tmp_path):
    """make(**NginxRtmp kwargs) -> started NginxRtmp (workdir under tmp_path); all stopped
    in teardown; their diagnostics are printed (pytest shows them for failed tests only)."""
    require_nginx_rtmp()
    servers: list[NginxRtmp] = []

    def make(**kw) -> NginxRtmp:
        kw.setdefault("workdir", tmp_path / f"nginx{len(servers)}")
        srv = NginxRtmp(**kw)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        print(srv.diagnostics())
        srv.stop()
        assert not srv.running


@pytest.fixture
def nginx_rtmp(nginx_rtmp_factory):
    return nginx_rtmp_factory()


FFMPEG_PUBLISH = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
                  "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                  "-f", "lavfi", "-i", "sine=frequency=440",
                  "-c:v", "libx264", "-profile:v", "baseline", "-g", "25", "-c:a", "aac", "-f", "flv"]


def ffmpeg_publish(url: str, seconds: float, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = FFMPEG_PUBLISH[:-2] + ["-t", str(seconds), "-f", "flv", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_h264_aac(path, seconds: float, tol: float = 0.5) -> dict:
    info = avcheck.probe(path)
    assert info["video"] and info["video"]["codec_name"] == "h264", info["streams"]
    assert info["audio"] and info["audio"]["codec_name"] == "aac", info["streams"]
    assert info["video"]["width"] == 320 and info["video"]["height"] == 240
    assert "Baseline" in (info["video"]["profile"] or ""), info["video"]
    assert abs(info["format"]["duration"] - seconds) < tol, info["format"]
    assert avcheck.decode_errors(path) == ""
    return info


# ---------------------------------------------------------------------------
# nginx-rtmp
# ---------------------------------------------------------------------------
@pytest.mark.peers
def test_nginx_rtmp_starts_fast_and_stops_clean(tmp_path):
    require_nginx_rtmp()
    t0 = time.monotonic()
    with NginxRtmp(workdir=tmp_path / "n") as srv:
        assert time.monotonic() - t0 < 2.0
        assert srv.url == f"rtmp://127.0.0.1:{srv.port}/live"
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        conf = srv.conf_path.read_text()
        assert f"listen 127.0.0.1:{srv.port};" in conf and "record_path" in conf
        pid = srv.proc.pid
    assert not srv.running
    assert subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).stdout == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


@pytest.mark.peers
def test_ffmpeg_publish_is_recorded(nginx_rtmp):
    r = ffmpeg_publish(nginx_rtmp.stream_url("smoke"), 5)
    assert r.returncode == 0, r.stderr
    rec = nginx_rtmp.wait_recording_stable("smoke", timeout=5)
    assert rec is not None and rec.name.startswith("smoke-") and rec.suffix == ".flv", nginx_rtmp.diagnostics()
    assert len(nginx_rtmp.recordings("smoke")) == 1
    assert_h264_aac(rec, 5.0)
    assert nginx_rtmp.recordings("other") == []


@pytest.mark.peers
def test_pyav_publish_is_recorded_in_sync(nginx_rtmp):
    # like sipstream's relay: av.open(url, mode="w", format="flv"), H.264 + AAC
    avcheck.write_flash_beep_media(nginx_rtmp.stream_url("pyav"), format="flv", seconds=6, fps=25,
                                   sample_rate=48000, freq=1000)
    rec = nginx_rtmp.wait_recording_stable("pyav", timeout=5)
    assert rec is not None, nginx_rtmp.diagnostics()
    assert_h264_aac(rec, 6.0)
    sync = avcheck.measure_av_sync(rec, fps=25, tone_hz=1000)
    assert sync["pairs"] == 3, sync
    assert sync["max_abs_ms"] < 10, sync


@pytest.mark.peers
def test_play_while_publishing(nginx_rtmp):
    url = nginx_rtmp.stream_url("live1")
    errors: list[BaseException] = []

    def publish():
        try:
            avcheck.write_flash_beep_media(url, seconds=5, realtime=True)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=publish)
    th.start()
    try:
        time.sleep(1.5)
        info = avcheck.probe(url, timeout=15, extra_args=("-rw_timeout", "5000000", "-analyzeduration", "1000000"))
        assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
    finally:
        th.join(30)
    assert not errors, errors


@pytest.mark.peers
def test_publish_refused(nginx_rtmp_factory):
    srv = nginx_rtmp_factory(allow_publish=False)
    assert "deny publish all;" in srv.conf_path.read_text()
    # ffmpeg: connects, nginx drops the connection after the publish command -> EPIPE
    r = ffmpeg_publish(srv.stream_url("nope"), 2)
    assert r.returncode != 0
    assert "Broken pipe" in r.stderr or "Connection reset" in r.stderr, r.stderr
    # PyAV: av.open succeeds, the refusal surfaces as an error on mux()/close()
    with pytest.raises((av.FFmpegError, OSError)):
        avcheck.write_flash_beep_media(srv.stream_url("nope2"), seconds=2)
    assert "access forbidden by rule" in srv.log_text()
    assert srv.recordings("nope") == [] and srv.recordings("nope2") == []


@pytest.mark.peers
def test_restart_keeps_port_and_recordings(nginx_rtmp):
    srv = nginx_rtmp
    port, url = srv.port, srv.url
    # a publisher that is connected while the server restarts sees its connection drop
    pub = subprocess.Popen(FFMPEG_PUBLISH[:-2] + ["-tune", "zerolatency", "-t", "30", "-f", "flv",
                                                  srv.stream_url("r")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.wait_recording("r", timeout=10, min_bytes=20_000) is not None, srv.diagnostics()
        old_pid = srv.proc.pid
        srv.restart(down_s=0.3)
        assert srv.port == port and srv.url == url and srv.proc.pid != old_pid
        rc = pub.wait(timeout=10)
        assert rc != 0, "publisher should notice the restart"
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    first = srv.recordings("r")
    assert len(first) == 1 and first[0].stat().st_size > 20_000
    assert avcheck.decode_errors(first[0]) == ""
    # publishing works again after the restart (new file: names carry unix seconds)
    while int(time.time()) == int(first[0].stat().st_mtime):
        time.sleep(0.05)
    r = ffmpeg_publish(srv.stream_url("r"), 2)
    assert r.returncode == 0, r.stderr
    assert srv.wait_recording("r", count=2, timeout=5) is not None, srv.diagnostics()
    assert len(srv.recordings("r")) == 2
    assert srv.recordings("r")[0] == first[0]


# ---------------------------------------------------------------------------
# avcheck: material generators
# ---------------------------------------------------------------------------
def test_flash_beep_generators():
    frames = list(avcheck.flash_beep_video_frames(160, 120, 25, 5, 2.0))
    assert len(frames) == 125 and frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8
    luma = np.array([f[16:].mean() for f in frames])
    assert list(np.flatnonzero(luma > 128)) == [0, 50, 100] == avcheck.flash_frame_indices(25, 5, 2.0)
    for i in (0, 1, 77, 124):
        assert avcheck.read_frame_counter(frames[i][:, :, 0]) == i
    wide = avcheck.flash_beep_frame(40000, 320, 240, 25)
    assert avcheck.read_frame_counter(wide[:, :, 1]) == 40000

    pcm = avcheck.flash_beep_audio(8000, 5, 2.0, beep_ms=100, freq=1000)
    assert pcm.dtype == np.int16 and len(pcm) == 40000
    loud = np.abs(pcm) > 1000
    onsets = [i for i in np.flatnonzero(loud) if not loud[max(i - 40, 0):i].any()]
    assert [round(i / 8000, 2) for i in onsets] == [0.0, 2.0, 4.0]
    delayed = avcheck.flash_beep_audio(8000, 5, 2.0, beep_ms=100, freq=1000, delay_ms=80)
    assert np.array_equal(delayed[640:16000], pcm[:16000 - 640])


# ---------------------------------------------------------------------------
# avcheck: analyzer on files made with PyAV
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["flv", "mp4"])
@pytest.mark.parametrize("delay_kind,delay_ms", [("none", 0), ("content", 80), ("pts", 80), ("content", -60)])
def test_measure_av_sync(tmp_path, fmt, delay_kind, delay_ms):
    require_ffmpeg()
    path = tmp_path / f"sync.{fmt}"
    kw = {"audio_delay_ms": delay_ms} if delay_kind == "content" else \
        {"audio_pts_offset_ms": delay_ms} if delay_kind == "pts" else {}
    avcheck.write_flash_beep_media(path, format=fmt, seconds=10, fps=25, sample_rate=48000, freq=1000, **kw)
    sync = avcheck.measure_av_sync(path, fps=25, tone_hz=1000)
    if delay_ms >= 0:
        assert sync["pairs"] == 5 and sync["unpaired_flashes"] == 0 and sync["unpaired_beeps"] == 0, sync
    else:  # the first beep would start before t=0, the last one end after 10 s: both left out
        assert sync["pairs"] == 4 and sync["unpaired_flashes"] == 1 and sync["unpaired_beeps"] == 0, sync
    if delay_ms == 0:
        assert sync["max_abs_ms"] < 10, sync
    else:
        assert all(abs(o - delay_ms) < 10 for o in sync["offsets_ms"]), sync
    assert abs(sync["drift_ms_per_min"]) < 10, sync
    assert avcheck.decode_errors(path) == ""
    info = avcheck.probe(path)
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert abs(info["format"]["duration"] - 10) < 0.3, info["format"]


@pytest.mark.parametrize("rate", [8000, 44100])
def test_measure_av_sync_other_rates(tmp_path, rate):
    require_ffmpeg()
    path = tmp_path / "sync.flv"
    avcheck.write_flash_beep_media(path, seconds=6, sample_rate=rate, freq=1000, audio_delay_ms=80)
    sync = avcheck.measure_av_sync(path, fps=25, tone_hz=1000)
    assert sync["pairs"] == 3 and all(abs(o - 80) < 10 for o in sync["offsets_ms"]), sync


def test_measure_av_sync_drift(tmp_path):
    require_ffmpeg()
    path = tmp_path / "drift.mp4"
    # beeps every 2.004 s instead of 2 s: audio loses 2 ms/s = 120 ms/min
    avcheck.write_flash_beep_media(path, format="mp4", seconds=20, audio_period_s=2.004)
    sync = avcheck.measure_av_sync(path, fps=25, tone_hz=1000)
    assert sync["pairs"] == 10, sync
    assert abs(sync["drift_ms_per_min"] - 120) < 10, sync
    assert abs(sync["offsets_ms"][-1] - 36) < 10, sync


def test_measure_av_sync_without_beeps(tmp_path):
    require_ffmpeg()
    silent = tmp_path / "silent.mp4"
    avcheck.write_flash_beep_media(silent, format="mp4", seconds=4, beep_ms=0.0)
    sync = avcheck.measure_av_sync(silent, fps=25, tone_hz=1000)
    assert sync["pairs"] == 0 and sync["beeps"] == [] and len(sync["flashes"]) == 2, sync
    assert sync["max_abs_ms"] is None and sync["unpaired_flashes"] == 2


def test_av_start_offset(tmp_path):
    require_ffmpeg()
    a, b = tmp_path / "a.flv", tmp_path / "b.flv"
    avcheck.write_flash_beep_media(a, seconds=2)
    avcheck.write_flash_beep_media(b, seconds=2, audio_pts_offset_ms=80)
    # the AAC encoder's priming (1024 samples) makes the first audio packet ~21 ms early
    base = avcheck.av_start_offset_ms(a)
    assert -30 < base <= 0
    assert abs(avcheck.av_start_offset_ms(b) - base - 80) < 3
