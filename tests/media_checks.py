"""Assertions that a stream carries the far end's real media.

sipstream's generator fills a negotiated track that has no RTP with a black
320x240 H.264 keyframe a second and G.711 silence (``generate_av_start_delay``),
so "frames arrived" proves nothing. Every test source therefore sends what the
generator never makes: a 352x288 moving picture at 25 fps and a tone. These
helpers check exactly that on a stream's frames: not generated, at the
source's rate, of the source's size, with moving content, and audio at the
tone's frequency.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH

# A generated track gives 1 video frame a second, so a rate above this can
# only come from the far end.
MIN_FPS = 15.0


@dataclass
class VideoSample:
    frames: int  # real (not generated) frames seen in the window
    generated: int  # placeholder frames seen in the window
    fps: float  # real frames per second of media time
    size: tuple[int, int]  # decoded picture size
    moving: bool  # decoded pictures differ from each other


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest component of ``samples`` (mono or interleaved channels)."""
    mono = samples.astype(np.float64) if samples.ndim == 1 else samples.astype(np.float64).mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(spectrum.argmax())])


async def sample_video(stream: Any, seconds: float = 2.0, timeout: float = 15.0) -> VideoSample:
    """Subscribe to ``stream``'s video and look at ``seconds`` of media time
    from the first real keyframe on: how many frames are real, their rate on
    the RTP clock, the decoded size, and whether the picture moves."""
    sub = stream.subscribe("video")
    decoder = av.CodecContext.create("h264", "r")
    real = generated = 0
    first_pts = None
    span = 0.0  # seconds of media time from the first real keyframe
    size = (0, 0)
    pictures: list[np.ndarray] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            frame = await asyncio.wait_for(sub.get(), max(0.1, deadline - loop.time()))
            assert frame is not None, f"stream {stream.name} ended while sampling its video"
            if frame.generated:
                generated += 1
                continue
            if first_pts is None and not frame.keyframe:
                continue
            first_pts = frame.pts if first_pts is None else first_pts
            span = (frame.pts - first_pts) / frame.clock_rate
            real += 1
            for picture in decoder.decode(av.Packet(frame.data)):
                size = (picture.width, picture.height)
                if len(pictures) < 50:
                    pictures.append(picture.to_ndarray(format="gray"))
            if span >= seconds:
                break
    except TimeoutError:
        raise AssertionError(f"stream {stream.name}: {real} real video frames in {timeout} s "
                             f"({generated} generated)") from None
    finally:
        sub.close()
    moving = len(pictures) > 1 and any(
        float(np.abs(a.astype(np.int16) - b).mean()) > 0.5 for a, b in zip(pictures, pictures[1:], strict=False))
    return VideoSample(real, generated, (real - 1) / span if span else 0.0, size, moving)


async def assert_real_video(stream: Any, size: tuple[int, int] = (SOURCE_WIDTH, SOURCE_HEIGHT),
                            min_fps: float = MIN_FPS, seconds: float = 2.0, timeout: float = 15.0) -> VideoSample:
    """The stream's video is the far end's picture: ``size``, moving, at least
    ``min_fps``, and no placeholder frame once real video flows."""
    sample = await sample_video(stream, seconds, timeout)
    assert sample.size == size, sample
    assert sample.fps >= min_fps, sample
    assert sample.moving, sample
    return sample


async def real_pcm(stream: Any, seconds: float = 1.0, timeout: float = 15.0) -> list[Any]:
    """``seconds`` of the stream's real (not generated) audio as PcmChunks,
    read through ``Stream.pcm()``; fails after ``timeout`` seconds."""
    chunks: list[Any] = []

    async def read() -> None:
        async with stream.pcm() as audio:
            async for chunk in audio:
                if not chunk.generated:
                    chunks.append(chunk)
                if sum(c.duration_s for c in chunks) >= seconds:
                    return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"stream {stream.name}: {len(chunks)} real audio frames in {timeout} s") from None
    assert chunks, f"stream {stream.name} ended before any real audio"
    return chunks


async def assert_tone(stream: Any, hz: float = 440.0, seconds: float = 1.0, timeout: float = 15.0) -> str:
    """The stream's audio is a tone of ``hz`` (not silence); returns its codec."""
    chunks = await real_pcm(stream, seconds, timeout)
    samples = np.concatenate([c.samples for c in chunks])
    assert np.abs(samples).max() > 2000, "silence, not the far end's tone"
    found = dominant_hz(samples, chunks[0].sample_rate)
    assert abs(found - hz) < 5, f"tone at {found:.1f} Hz, expected {hz}"
    return str(chunks[0].codec)


async def real_frames(stream: Any, kind: str, count: int, timeout: float = 15.0) -> list[Any]:
    """The next ``count`` real (not generated) ``kind`` frames of ``stream``
    (MediaFrames), within ``timeout`` seconds."""
    sub = stream.subscribe(kind)
    frames: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while len(frames) < count:
            try:
                frame = await asyncio.wait_for(sub.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                missing = f"{stream.name}: {len(frames)}/{count} real {kind} frames in {timeout} s"
                raise AssertionError(missing) from None
            assert frame is not None, f"{stream.name} ended after {len(frames)}/{count} real {kind} frames"
            if not frame.generated:
                frames.append(frame)
    finally:
        sub.close()
    return frames


async def real_frames_grow(stream: Any, kind: str = "video", count: int = SOURCE_FPS, timeout: float = 15.0) -> None:
    """At least ``count`` more real (not generated) ``kind`` frames reach the
    stream within ``timeout`` seconds: its media is flowing from the far end
    now, not from the generator."""
    def real() -> int:
        return int(stream.frames[kind] - stream.generated[kind])

    start = real()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while real() - start < count:
        assert loop.time() < deadline, (
            f"stream {stream.name}: {real() - start} real {kind} frames in {timeout} s "
            f"(generated so far: {stream.generated[kind]})")
        await asyncio.sleep(0.05)


PLAYBACK_MEASURE_S = 3.0
# Web Audio RMS of the received audio (full scale 1.0): the test tone's is
# about 0.17, the generator's silence 0.
MIN_AUDIO_RMS = 0.02


def assert_real_playback(stats: dict[str, Any], tone_hz: float | None = 440.0,
                         size: tuple[int, int] = (SOURCE_WIDTH, SOURCE_HEIGHT)) -> None:
    """Chromium's stats from ``whep_play(..., measure_s=PLAYBACK_MEASURE_S)``
    show the far end's media: the source's picture size, decoded at the
    source's rate over the whole window, and (unless ``tone_hz`` is None) the
    source's tone, not silence."""
    assert stats["error"] is None, stats
    assert stats["measuredS"] >= PLAYBACK_MEASURE_S * 0.9, stats
    assert (stats["frameWidth"], stats["frameHeight"]) == size, stats
    assert stats["fps"] >= MIN_FPS, stats
    if tone_hz is not None:
        assert stats["audioRms"] >= MIN_AUDIO_RMS, stats
        # the analyser's bins are 48000 / 8192 = 5.9 Hz wide
        assert abs(stats["audioPeakHz"] - tone_hz) < 12, stats
