"""Checks of recorded/relayed media: ffprobe/ffmpeg (Debian ``ffmpeg``) and PyAV.

    probe(path_or_url)            -> {"streams": [...], "format": {...}, "video": {...}|None, "audio": {...}|None}
    decode_errors(path)           -> ffmpeg's error output while decoding everything ('' = clean)
    av_start_offset_ms(path)      -> first audio packet pts - first video packet pts (ms)
    measure_av_sync(path, fps, tone_hz, period_s=2.0)
                                  -> A/V offsets of flash/beep pairs, max |offset|, drift

A/V sync test material ("flash + beep"): every ``period_s`` seconds of source time the video
shows one white frame and the audio starts a ``beep_ms`` tone burst, at exactly the same
source instant (frame ``k * period_s * fps`` / sample ``k * period_s * sample_rate``).
Between flashes the video is a dark frame with a moving grey bar and a 16-bit frame counter
(16 blocks of 16x16 px on the top rows, MSB first, like ``media.pattern_frame``); the audio is
silence.  The analyzer decodes the media with PyAV, finds flashes (luma mean of a frame jumps
above the midpoint between dark and white) and beep onsets (smoothed |x| envelope crosses
half of its peak), pairs each flash with the nearest beep (within ``period_s / 2``) and
reports ``offset = beep time - flash time`` in ms (positive = audio late).

    frames = flash_beep_video_frames(320, 240, 25, 30, 2.0)          # generator of HxWx3 uint8 RGB
    pcm = flash_beep_audio(8000, 30, 2.0, beep_ms=100, freq=1000)    # int16 mono
    write_flash_beep_media("x.flv", seconds=10, audio_delay_ms=80)   # H.264 + AAC via PyAV (file or rtmp URL)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np

COUNTER_BITS = 16
COUNTER_BLOCK = 16
DARK = 32          # RGB value of the background between flashes
BAR = 96           # moving bar (kept dim so the luma mean of normal frames stays low)
WHITE = 255



def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


# ---------------------------------------------------------------------------
# ffprobe / ffmpeg
# ---------------------------------------------------------------------------
def _num(v: Any) -> Any:
    if v is None or v == "N/A":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) else f


_STREAM_KEYS = ("index", "codec_type", "codec_name", "profile", "width", "height", "pix_fmt",
                "sample_rate", "channels", "channel_layout", "start_time", "duration", "nb_frames",
                "avg_frame_rate", "time_base")


def probe(path_or_url: os.PathLike[str] | str, timeout: float = 30.0, extra_args: tuple = ()) -> dict:
    """``ffprobe -v error -show_streams -show_format -of json``, simplified.

    Returns ``{"streams": [{codec_type, codec_name, profile, width, height, sample_rate,
    channels, start_time, duration, ...}], "format": {"format_name", "duration",
    "start_time", "size", "bit_rate"}, "video": first video stream or None, "audio": first
    audio stream or None, "raw": the full ffprobe JSON}``.  Numbers are int/float, "N/A" -> None.
    Raises RuntimeError when ffprobe fails (message = its stderr)."""
    cmd = ["ffprobe", "-v", "error", *extra_args, "-show_streams", "-show_format", "-of", "json",
           str(path_or_url)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"ffprobe failed ({r.returncode}) for {path_or_url}: {r.stderr.strip()}")
    raw = json.loads(r.stdout or "{}")
    streams = []
    for s in raw.get("streams", []):
        d = {k: _num(s.get(k)) for k in _STREAM_KEYS}
        for k in ("codec_name", "codec_type", "profile", "pix_fmt", "channel_layout", "avg_frame_rate", "time_base"):
            d[k] = s.get(k)
        streams.append(d)
    f = raw.get("format", {})
    fmt = {"format_name": f.get("format_name"), "duration": _num(f.get("duration")),
           "start_time": _num(f.get("start_time")), "size": _num(f.get("size")),
           "bit_rate": _num(f.get("bit_rate")), "nb_streams": _num(f.get("nb_streams"))}
    video = next((s for s in streams if s["codec_type"] == "video"), None)
    audio = next((s for s in streams if s["codec_type"] == "audio"), None)
    return {"streams": streams, "format": fmt, "video": video, "audio": audio, "raw": raw}


def decode_errors(path: os.PathLike[str] | str, timeout: float = 120.0) -> str:
    """stderr of ``ffmpeg -v error -i FILE -f null -`` (every stream decoded); '' = clean."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = r.stderr.strip()
    if r.returncode != 0 and not out:
        out = f"ffmpeg exited with {r.returncode}"
    return out


def av_start_offset_ms(path: os.PathLike[str] | str) -> float:
    """pts of the first audio packet minus pts of the first video packet, in ms
    (positive = audio starts later).  Uses PyAV's demuxer (no decoding)."""
    import av

    first: dict[str, float] = {}
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type in ("audio", "video")]
        for pkt in c.demux(streams):
            kind = pkt.stream.type
            if pkt.pts is None or kind in first:
                continue
            first[kind] = float(pkt.pts * pkt.time_base)
            if len(first) == 2:
                break
    if "audio" not in first or "video" not in first:
        raise ValueError(f"{path}: needs an audio and a video stream, found {sorted(first)}")
    return (first["audio"] - first["video"]) * 1000.0


# ---------------------------------------------------------------------------
# flash + beep source material
# ---------------------------------------------------------------------------
def _period_frames(fps: float, period_s: float) -> int:
    n = period_s * fps
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"period_s * fps must be a whole number of frames ({period_s} * {fps})")
    return int(round(n))


def flash_frame_indices(fps: float, seconds: float, period_s: float = 2.0) -> list[int]:
    """Indices of the flash frames: 0, period_s*fps, 2*period_s*fps, ..."""
    step = _period_frames(fps, period_s)
    return list(range(0, int(round(seconds * fps)), step))


def _counter_bits(width: int) -> int:
    return min(COUNTER_BITS, width // COUNTER_BLOCK)


def draw_frame_counter(rgb: np.ndarray, i: int) -> None:
    """Draw ``i`` as black/white 16x16 blocks on the top 16 rows, MSB first (in place):
    16 bits when the frame is at least 256 px wide (same layout as ``media.pattern_frame``),
    else the low ``width // 16`` bits."""
    nbits = _counter_bits(rgb.shape[1])
    rgb[:COUNTER_BLOCK, :] = 128
    for b in range(nbits):
        x0 = b * COUNTER_BLOCK
        bit = (i >> (nbits - 1 - b)) & 1
        rgb[:COUNTER_BLOCK, x0:x0 + COUNTER_BLOCK] = 235 if bit else 16


def read_frame_counter(luma: np.ndarray) -> int:
    """The counter drawn by :func:`draw_frame_counter`, from a luma plane (or any 2-D
    grey image at the original resolution); modulo ``2 ** (width // 16)`` below 256 px."""
    n = 0
    for b in range(_counter_bits(luma.shape[1])):
        x0 = b * COUNTER_BLOCK
        blk = luma[2:COUNTER_BLOCK - 2, x0 + 2:x0 + COUNTER_BLOCK - 2]
        n = (n << 1) | (1 if float(blk.mean()) > 128 else 0)
    return n


def flash_beep_frame(i: int, width: int, height: int, fps: float, period_s: float = 2.0,
                     flash_frames: int = 1) -> np.ndarray:
    """Frame ``i`` (HxWx3 uint8 RGB) of the flash pattern."""
    step = _period_frames(fps, period_s)
    rgb = np.full((height, width, 3), DARK, np.uint8)
    if i % step < flash_frames:
        rgb[:] = WHITE
    else:
        bx = (i * 4) % width
        rgb[COUNTER_BLOCK:, bx:bx + 8] = BAR
    draw_frame_counter(rgb, i)
    return rgb


def flash_beep_video_frames(width: int, height: int, fps: float, seconds: float, period_s: float = 2.0,
                            flash_frames: int = 1) -> Iterator[np.ndarray]:
    """A generator of ``seconds * fps`` RGB frames (HxWx3 uint8): a white frame at every
    multiple of ``period_s`` (frame 0 included), otherwise dark with a moving bar; every
    frame carries its index as a frame counter.  (A generator: 60 s of 640x480 would be
    1.4 GB as a list.)"""
    for i in range(int(round(seconds * fps))):
        yield flash_beep_frame(i, width, height, fps, period_s, flash_frames)


def flash_beep_audio(sample_rate: int, seconds: float, period_s: float = 2.0, beep_ms: float = 100.0,
                     freq: float = 1000.0, amplitude: float = 0.5, delay_ms: float = 0.0) -> np.ndarray:
    """int16 mono PCM: silence with a ``beep_ms`` sine burst (``freq`` Hz, starting at phase 0)
    at every multiple of ``period_s`` (t = 0 included), shifted by ``delay_ms`` (content
    delay; the length stays ``seconds``).  Bursts cut by the start or the end are left out
    (a negative delay drops the first beep), so every burst present has a true onset."""
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, np.float64)
    blen = int(round(beep_ms * sample_rate / 1000.0))
    t = np.arange(blen) / sample_rate
    burst = amplitude * np.sin(2 * np.pi * freq * t)
    # 1 ms raised-cosine fade-out only (the onset stays sharp; a fade-out avoids a click)
    fade = min(blen, max(1, sample_rate // 1000))
    burst[-fade:] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade)))
    k = 0
    while True:
        start = int(round((k * period_s + delay_ms / 1000.0) * sample_rate))
        if start >= n:
            break
        if start >= 0 and start + blen <= n:
            out[start:start + blen] = burst
        k += 1
    return np.round(out * 32767).astype(np.int16)


def write_flash_beep_media(target: os.PathLike[str] | str, *, format: str | None = None, seconds: float = 10.0,
                           width: int = 320, height: int = 240, fps: int = 25, sample_rate: int = 48000,
                           period_s: float = 2.0, beep_ms: float = 100.0, freq: float = 1000.0,
                           audio_delay_ms: float = 0.0, audio_pts_offset_ms: float = 0.0,
                           audio_period_s: float | None = None, gop: int | None = None,
                           realtime: bool = False, audio: bool = True, video: bool = True) -> dict:
    """Encode the flash/beep material as H.264 (libx264 baseline) + AAC with PyAV into
    ``target`` (a file, or an ``rtmp://`` URL with ``format="flv"``, like sipstream's relay).

    ``audio_delay_ms`` delays the beeps inside the audio (timestamps start together);
    ``audio_pts_offset_ms`` starts the audio stream's timestamps later (the content is
    aligned to its own timestamps).  Both make the audio ``N`` ms late for a player.
    ``audio_period_s`` (default ``period_s``) spaces the beeps differently from the flashes,
    to simulate a drifting audio clock.  ``realtime`` paces the muxing to wall-clock time (like ``ffmpeg -re``).
    Returns ``{"video_frames", "audio_samples", "flash_times_s"}``."""
    import av

    target_s = str(target)
    if format is None and target_s.startswith("rtmp"):
        format = "flv"
    gop = gop or fps
    events: list[tuple[float, int, Any]] = []
    nframes = int(round(seconds * fps))
    if video:
        for i in range(nframes):
            events.append((i / fps, 0, i))
    pcm = None
    if audio:
        pcm = flash_beep_audio(sample_rate, seconds, audio_period_s or period_s, beep_ms, freq, delay_ms=audio_delay_ms)
        chunk = 1024
        off = audio_pts_offset_ms / 1000.0
        for s0 in range(0, len(pcm), chunk):
            events.append((off + s0 / sample_rate, 1, s0))
    events.sort(key=lambda e: (e[0], e[1]))

    out = av.open(target_s, mode="w", format=format)
    try:
        vs = as_ = None
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.codec_context.time_base = Fraction(1, fps)
            vs.codec_context.gop_size = gop
            vs.codec_context.max_b_frames = 0
            vs.codec_context.options = {"profile": "baseline", "preset": "veryfast", "tune": "zerolatency",
                                        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        if audio:
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.codec_context.layout = "mono"
            as_.codec_context.time_base = Fraction(1, sample_rate)
        t0 = time.monotonic()
        apts0 = int(round(audio_pts_offset_ms * sample_rate / 1000.0))
        for t, kind, v in events:
            if realtime:
                delay = t0 + t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if kind == 0:
                frame = av.VideoFrame.from_ndarray(flash_beep_frame(v, width, height, fps, period_s), format="rgb24")
                frame.pts = v
                frame.time_base = Fraction(1, fps)
                out.mux(vs.encode(frame))
            else:
                data = pcm[v:v + 1024]
                frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = apts0 + v
                frame.time_base = Fraction(1, sample_rate)
                out.mux(as_.encode(frame))
        if vs is not None:
            out.mux(vs.encode(None))
        if as_ is not None:
            out.mux(as_.encode(None))
    finally:
        out.close()
    return {"video_frames": nframes if video else 0, "audio_samples": 0 if pcm is None else len(pcm),
            "flash_times_s": [i / fps for i in flash_frame_indices(fps, seconds, period_s)] if video else []}


# ---------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------
def video_luma_means(path: os.PathLike[str] | str) -> tuple[np.ndarray, np.ndarray]:
    """(times_s, luma_mean) of every decoded video frame (presentation order)."""
    import av

    times, means = [], []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        n = 0
        for frame in c.decode(vs):
            t = frame.time
            if t is None:
                rate = float(vs.average_rate or 25)
                t = n / rate
            y = frame.to_ndarray(format="gray")
            # ignore the counter rows
            means.append(float(y[COUNTER_BLOCK:].mean()))
            times.append(float(t))
            n += 1
    return np.asarray(times), np.asarray(means)


def _audio_to_mono_float(frame) -> np.ndarray:
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels) if frame.layout is not None else 1
    if fmt.is_planar:
        x = arr.astype(np.float64)
        if x.ndim == 2:
            x = x.mean(axis=0)
    else:
        x = arr.reshape(-1).astype(np.float64)
        if channels > 1:
            x = x[: (len(x) // channels) * channels].reshape(-1, channels).mean(axis=1)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint8:
            x = (x - 128.0) / 128.0
        else:
            x = x / float(np.iinfo(arr.dtype).max)
    return x


def audio_samples(path: os.PathLike[str] | str) -> tuple[np.ndarray, np.ndarray, int]:
    """(times_s, mono float samples, sample_rate) of the first audio stream, every sample
    timed by its decoded frame's pts (gaps/overlaps in the timestamps are kept)."""
    import av

    times, chunks = [], []
    rate = 0
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        n = 0
        for frame in c.decode(st):
            rate = frame.sample_rate or rate
            x = _audio_to_mono_float(frame)
            t0 = frame.time if frame.time is not None else n / rate
            times.append(float(t0) + np.arange(len(x)) / rate)
            chunks.append(x)
            n += len(x)
    if not chunks:
        return np.zeros(0), np.zeros(0), rate
    return np.concatenate(times), np.concatenate(chunks), rate


def detect_flashes(times: np.ndarray, luma: np.ndarray, min_gap_s: float = 0.5) -> list[float]:
    """Times of frames where the luma mean rises above the dark/white midpoint."""
    if len(luma) == 0:
        return []
    lo, hi = float(np.percentile(luma, 10)), float(np.max(luma))
    if hi - lo < 60:        # no flash at all
        return []
    thr = (lo + hi) / 2
    out: list[float] = []
    prev = False
    for t, m in zip(times, luma, strict=True):
        on = m > thr
        if on and not prev and (not out or t - out[-1] >= min_gap_s):
            out.append(float(t))
        prev = on
    return out


def detect_beeps(times: np.ndarray, x: np.ndarray, rate: int, tone_hz: float | None = None,
                 min_gap_s: float = 0.5) -> list[float]:
    """Onset times of tone bursts: the centred moving average of |x| (window = 1.5 tone
    periods, at least 1 ms) crosses half of its peak."""
    if len(x) == 0 or rate <= 0:
        return []
    win_s = max(0.001, 1.5 / tone_hz) if tone_hz else 0.003
    w = max(1, int(round(win_s * rate)))
    env = np.convolve(np.abs(x), np.ones(w) / w, mode="same")
    peak = float(np.max(env))
    floor = float(np.median(env))
    if peak <= 0 or peak < 8 * floor + 1e-4:
        return []
    above = env > 0.5 * peak
    idx = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    if above[0]:
        idx = np.concatenate([[0], idx])
    out: list[float] = []
    for i in idx:
        t = float(times[i])
        if not out or t - out[-1] >= min_gap_s:
            out.append(t)
    return out


def measure_av_sync(path: os.PathLike[str] | str, fps: float | None = None, tone_hz: float | None = None,
                    period_s: float = 2.0) -> dict:
    """A/V sync of flash/beep media (see the module docstring).

    Returns ``{"offsets_ms": [beep - flash per pair], "pair_times_s": [flash times],
    "mean_ms", "max_abs_ms", "drift_ms_per_min" (least-squares slope of offset over time,
    0 with < 2 pairs), "pairs", "flashes", "beeps", "unpaired_flashes", "unpaired_beeps",
    "video_resolution_ms" (1000 / fps: a flash can only be seen at a frame time)}``.
    ``fps``: the source frame rate (only reported; frame times come from the pts);
    ``tone_hz``: the beep frequency (sets the envelope window)."""
    vt, luma = video_luma_means(path)
    at, ax, rate = audio_samples(path)
    gap = period_s / 2
    flashes = detect_flashes(vt, luma, min_gap_s=gap)
    beeps = detect_beeps(at, ax, rate, tone_hz, min_gap_s=gap)
    offsets, ptimes, used = [], [], set()
    for f in flashes:
        best = None
        for j, b in enumerate(beeps):
            if j in used or abs(b - f) >= gap:
                continue
            if best is None or abs(b - f) < abs(beeps[best] - f):
                best = j
        if best is not None:
            used.add(best)
            offsets.append((beeps[best] - f) * 1000.0)
            ptimes.append(f)
    drift = 0.0
    if len(offsets) >= 2 and max(ptimes) > min(ptimes):
        slope = np.polyfit(np.asarray(ptimes), np.asarray(offsets), 1)[0]   # ms per s
        drift = float(slope * 60.0)
    return {
        "offsets_ms": [round(o, 3) for o in offsets],
        "pair_times_s": ptimes,
        "mean_ms": float(np.mean(offsets)) if offsets else None,
        "max_abs_ms": float(np.max(np.abs(offsets))) if offsets else None,
        "drift_ms_per_min": drift,
        "pairs": len(offsets),
        "flashes": flashes,
        "beeps": beeps,
        "unpaired_flashes": len(flashes) - len(offsets),
        "unpaired_beeps": len(beeps) - len(used),
        "video_resolution_ms": (1000.0 / fps) if fps else None,
        "audio_rate": rate,
    }
