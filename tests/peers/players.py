"""Real players of the HLS and RTSP ports, shared by the tests that play a
stream over them: ffmpeg copying what it reads into a file, Debian's
Chromium playing an HLS playlist natively in a ``<video>``, GStreamer's
``rtspsrc`` decoding both tracks to raw files.

    await ffmpeg_copy(url, tmp_path / "out.mkv", 8, "-rtsp_transport", "tcp")
    first, later = await chromium_plays_hls(hls_url, server.base_url + "/health")
    frames, pcm, log = await gstreamer_rtsp_decode(rtsp_url, "tcp", tmp_path, 352, 288)
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .chromium import launch_chromium, new_page


async def run(*args: str, timeout: float = 40) -> tuple[int, str]:
    """Run a command; its exit code and output (stdout and stderr). Killed
    after ``timeout`` seconds."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def ffmpeg_copy(url: str, out: Path, seconds: float, *input_args: str, audio: str = "copy",
                      timeout: float = 60) -> None:
    """ffmpeg reads ``seconds`` of media from ``url`` (``input_args`` before
    ``-i``) and writes it to ``out``: video copied, audio as ``audio`` (an
    encoder name, or "copy")."""
    code, log = await run("ffmpeg", "-nostdin", "-hide_banner", "-v", "warning", "-y", *input_args, "-i", url,
                          "-t", str(seconds), "-c:v", "copy", "-c:a", audio, str(out), timeout=timeout)
    assert code == 0 and out.exists(), log[-2000:]


_VIDEO_STATE = ("() => { const v = document.getElementById('v'); "
                "return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, error: v.error && v.error.message}; }")


async def chromium_plays_hls(url: str, origin: str, watch_s: float = 4, start_timeout: float = 25) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """Chromium plays the playlist ``url`` natively in a muted ``<video>`` on
    a page of ``origin`` (another origin than the HLS port's, so CORS counts).
    Returns the video's state (``t`` current time, ``w``/``h`` picture size,
    ``error``) once it plays, and ``watch_s`` seconds later."""
    async with launch_chromium() as ctx:
        page = await new_page(ctx)
        await page.goto(origin)
        await page.set_content(f'<video id="v" muted autoplay playsinline src="{url}"></video>')
        first: dict[str, Any] = {}
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            first = await page.evaluate(_VIDEO_STATE)
            assert first["error"] is None, (first, page.console_log)
            if first["t"] > 0:
                break
            await asyncio.sleep(0.25)
        assert first["t"] > 0, (first, page.console_log)
        await asyncio.sleep(watch_s)
        return first, await page.evaluate(_VIDEO_STATE)


async def gstreamer_rtsp_decode(url: str, protocols: str, workdir: Path, width: int, height: int,
                                seconds: float = 5) -> tuple[int, np.ndarray, str]:
    """GStreamer's ``rtspsrc`` (``protocols`` "tcp" or "udp") plays ``url``
    for ``seconds``: H.264 decoded to I420 frames and PCMU to 8 kHz samples.
    Returns the number of ``width`` x ``height`` frames, the samples, and
    gst-launch's output."""
    frames, tone = workdir / f"gst-{protocols}.yuv", workdir / f"gst-{protocols}.raw"
    pipeline = (f"rtspsrc location={url} protocols={protocols} latency=200 name=s "
                "s. ! application/x-rtp,media=video ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! "
                f"video/x-raw,format=I420 ! filesink location={frames} "
                "s. ! application/x-rtp,media=audio ! rtppcmudepay ! mulawdec ! audioconvert ! "
                f"audio/x-raw,format=S16LE,channels=1 ! filesink location={tone}")
    proc = subprocess.Popen(["gst-launch-1.0", "-e", *pipeline.split(" ")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        await asyncio.sleep(seconds)
        proc.send_signal(2)  # SIGINT: with -e, an EOS and a clean end
        out, _ = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    count = frames.stat().st_size // (width * height * 3 // 2) if frames.exists() else 0
    pcm = np.frombuffer(tone.read_bytes(), dtype="<i2") if tone.exists() else np.zeros(0, dtype="<i2")
    return count, pcm, out.decode(errors="replace")
