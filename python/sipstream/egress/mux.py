"""Writing a stream into a container with PyAV: what RTMP relays (FLV) and
recordings (fragmented MP4) share.

``AvWriter`` is the blocking half and runs on its caller's own thread: H.264
is copied (the first keyframe's SPS/PPS become the container's codec
header); audio is decoded (PCMU, PCMA, opus), resampled and encoded to AAC,
or opus is copied as it came. Timestamps are microseconds on the media
core's common A/V clock (``MediaFrame.pts_us``), relative to the first frame
written, so both tracks start together and stay aligned.

The async helpers pick the first frames of a stream (a real keyframe, and
the audio from that instant on) and gather whatever frames are ready into
one batch, so that a writer thread is woken once per batch, not per frame."""

from __future__ import annotations

import asyncio
import fractions
import io
import logging
from typing import Any

import av
import numpy as np

from .._core import black_keyframe
from ..media.stream import MediaFrame, Subscription

log = logging.getLogger(__name__)

# SIP audio codec -> (FFmpeg decoder, sample rate, layout)
AUDIO_DECODERS = {
    "PCMU": ("pcm_mulaw", 8000, "mono"),
    "PCMA": ("pcm_alaw", 8000, "mono"),
    "opus": ("libopus", 48000, "stereo"),
}
_US = 1_000_000
_STATELESS = ("PCMU", "PCMA")  # one byte a sample, no decoder state
# A writer is fed once per this window: RTMP and files need no lower latency,
# and fewer, larger batches cost less CPU than one wake-up per frame.
BATCH_WINDOW_S = 0.1
# (kind, codec, data, µs from the writer's start, keyframe for video / muted for audio)
BatchItem = tuple[str, str, bytes, int, bool]


def aac_rate_for(codec: str) -> int:
    """AAC sample rate for a SIP codec: narrowband G.711 needs no 48 kHz
    (16 kHz keeps its whole band at a third of the encoding cost)."""
    return 48000 if codec == "opus" else 16000


class AvWriter:
    """One container being written: ``open`` → ``start`` → ``write_batch``… → ``close``."""

    def __init__(self, target: str, format: str, *, options: dict[str, str] | None = None,
                 open_timeout: float | None = None, video_time_base: fractions.Fraction = fractions.Fraction(1, 90000),
                 audio_copy: bool = False, aac_rate: int | None = None) -> None:
        self.target = target
        self.format = format
        self.options = options or {}
        self.open_timeout = open_timeout
        self.video_time_base = video_time_base
        self.audio_copy = audio_copy
        self.aac_rate = aac_rate
        self.container: Any = None
        self.video: Any = None
        self.audio: Any = None
        self.audio_codec = ""
        self.last_us = 0  # timestamp of the latest frame written
        self.frames = 0
        self.skipped = 0  # audio frames in another codec than the track's
        self._decoder: Any = None
        self._resampler: Any = None
        self._audio_rate = 0
        self._audio_samples = 0
        self._audio_start: int | None = None
        self._last_video_pts = -1
        self._last_audio_pts = -1

    def open(self) -> None:
        timeout = (self.open_timeout, 10.0) if self.open_timeout is not None else None
        self.container = av.open(self.target, mode="w", format=self.format, options=self.options, timeout=timeout)

    def start(self, keyframe: bytes | None, audio_codec: str | None) -> None:
        """Add the tracks: video from a keyframe's SPS/PPS, audio for ``audio_codec``."""
        assert self.container is not None
        if keyframe is not None:
            template = av.open(io.BytesIO(keyframe), format="h264")
            try:
                self.video = self.container.add_stream_from_template(template.streams.video[0])
            finally:
                template.close()
            self.video.time_base = self.video_time_base
        if audio_codec is not None:
            self.audio_codec = audio_codec
            if self.audio_copy and audio_codec == "opus":
                # The opus packets are muxed as they came; the encoder is only
                # opened for the codec header (OpusHead) and never fed.
                self.audio = self.container.add_stream("libopus", rate=48000)
                self.audio.layout = "stereo"
                self._audio_rate = 48000
            else:
                name, rate, layout = AUDIO_DECODERS[audio_codec]
                self._decoder = av.CodecContext.create(name, "r")
                self._decoder.sample_rate = rate
                self._decoder.layout = layout
                out_rate = self.aac_rate or aac_rate_for(audio_codec)
                self.audio = self.container.add_stream("aac", rate=out_rate)
                self.audio.layout = layout
                self.audio.bit_rate = 64000 if layout == "mono" else 96000
                # The fast coder costs a fraction of FFmpeg's default twoloop search.
                self.audio.codec_context.options = {"aac_coder": "fast"}
                self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=out_rate)
                self._audio_rate = out_rate

    def write_video(self, data: bytes, us: int, keyframe: bool) -> None:
        if self.video is None:
            return
        tb = self.video_time_base
        pts = us * tb.denominator // (_US * tb.numerator)
        pts = max(pts, self._last_video_pts + 1)  # containers need increasing timestamps
        self._last_video_pts = pts
        packet = av.Packet(data)
        packet.stream = self.video
        packet.pts = packet.dts = pts
        packet.time_base = tb
        packet.is_keyframe = keyframe
        self.container.mux(packet)

    def write_audio(self, data: bytes, us: int, muted: bool) -> None:
        if self.audio is None:
            return
        if self._audio_start is None:
            self._audio_start = us * self._audio_rate // _US
        if self._decoder is None:
            self._write_audio_copy(data, us)
            return
        for frame in self._decoder.decode(av.Packet(data)):
            if muted:
                silent = np.zeros_like(frame.to_ndarray())
                replacement = av.AudioFrame.from_ndarray(silent, format=frame.format.name, layout=frame.layout.name)
                replacement.sample_rate = frame.sample_rate
                frame = replacement
            frame.pts = None
            for out in self._resampler.resample(frame):
                # Audio time is counted in samples from the track's start, so
                # it never drifts against its own clock.
                out.pts = self._audio_start + self._audio_samples
                out.time_base = fractions.Fraction(1, self._audio_rate)
                self._audio_samples += out.samples
                for packet in self.audio.encode(out):
                    self.container.mux(packet)

    def _write_audio_copy(self, data: bytes, us: int) -> None:
        pts = max(us * self._audio_rate // _US, self._last_audio_pts + 1)
        self._last_audio_pts = pts
        packet = av.Packet(data)
        packet.stream = self.audio
        packet.pts = packet.dts = pts
        packet.time_base = fractions.Fraction(1, self._audio_rate)
        self.container.mux(packet)

    def write_batch(self, batch: list[BatchItem]) -> None:
        """Frames in order. Audio in another codec than the track's (after a
        re-INVITE changed it) cannot go into this track and is skipped.
        Consecutive G.711 frames are decoded as one: the codec has no state,
        and one decode/resample/encode round per batch is far cheaper than
        one per 20 ms frame."""
        run: list[bytes] = []
        run_us, run_muted = 0, False
        for kind, codec, data, us, flag in batch:
            if kind == "video":
                self.write_video(data, us, flag)
            elif codec != self.audio_codec:
                self.skipped += 1
                continue
            elif codec in _STATELESS and not self.audio_copy:
                if run and flag != run_muted:
                    self.write_audio(b"".join(run), run_us, run_muted)
                    run = []
                if not run:
                    run_us, run_muted = us, flag
                run.append(data)
            else:
                self.write_audio(data, us, flag)
            self.frames += 1
            self.last_us = max(self.last_us, us)
        if run:
            self.write_audio(b"".join(run), run_us, run_muted)

    def close(self) -> None:
        """Flush the audio encoder and write the trailer; never raises."""
        container, self.container = self.container, None
        if container is None:
            return
        try:
            if self.audio is not None and self._decoder is not None:
                for packet in self.audio.encode(None):
                    container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            log.debug("flushing AAC of %s failed: %s", self.format, exc)
        try:
            container.close()
        except (av.error.FFmpegError, OSError) as exc:
            log.debug("closing %s failed: %s", self.format, exc)


class TrackClock:
    """Microseconds from the media core's common A/V clock (``pts_us``,
    aligned by RTCP sender reports), starting at 0 with the writer."""

    def __init__(self, t0_us: int) -> None:
        self.t0_us = t0_us

    def us(self, frame: MediaFrame) -> int:
        return max(0, frame.pts_us - self.t0_us)


async def first_keyframe(video: Subscription) -> MediaFrame | None:
    """The first real keyframe: a generated black one that fills in before
    the video starts would sit a few ms before it and confuse players."""
    while True:
        frame = await video.get()
        if frame is None or (frame.keyframe and not frame.generated):
            return frame


async def first_frames(video: Subscription | None, audio: Subscription | None,
                       black_for_audio_only: bool) -> tuple[MediaFrame | None, MediaFrame | None, bytes | None] | None:
    """The frames a writer starts with: the first real keyframe and the audio
    from that instant on. An audio-only stream gets the generator's black
    keyframe when ``black_for_audio_only`` (returned third, to repeat once a
    second). None when the stream ended before it had media."""
    first = await first_keyframe(video) if video is not None else None
    audio_first = await audio.get() if audio is not None else None
    # Both tracks start together: audio from before the first keyframe is dropped.
    while first is not None and audio_first is not None and audio_first.pts_us < first.pts_us - 10_000:
        audio_first = await audio.get()  # type: ignore[union-attr]
    if (video is not None and first is None) or (audio is not None and audio_first is None):
        return None
    black = None
    if video is None and audio_first is not None and black_for_audio_only:
        black = black_keyframe()
        first = MediaFrame("video", "H264", black, 0, 90000, True, audio_first.arrival, audio_first.pts_us)
    return first, audio_first, black


async def next_frames(video: Subscription | None, audio: Subscription | None) -> list[MediaFrame]:
    """Whatever frames are ready next, from either track, in presentation
    order; [] when the stream ended."""
    subs = [s for s in (video, audio) if s is not None]
    ready = [s for s in subs if not s.queue.empty()]
    if not ready:
        waits = {asyncio.ensure_future(s.queue.get()): s for s in subs}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        frames = [t.result() for t in done]
        # A get() cancelled after it took an item would lose it; asyncio.Queue
        # hands items over only to completed getters, so this cannot happen.
    else:
        frames = []
    for sub in subs:  # and everything else already waiting
        while not sub.queue.empty():
            frames.append(sub.queue.get_nowait())
    if any(f is None for f in frames):
        return []
    result = [f for f in frames if f is not None]
    result.sort(key=lambda f: f.pts_us)
    return result
