"""A stream's audio as numpy int16 PCM, for applications that transcribe or
analyse calls: G.711 is decoded in Rust, opus with PyAV (libopus).

    async with stream.pcm() as audio:
        async for chunk in audio:
            feed(chunk.samples, chunk.sample_rate)   # int16, shape (n,) or (n, 2)
"""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from .._core import g711_decode

if TYPE_CHECKING:
    from .stream import Stream, Subscription


@dataclasses.dataclass(slots=True)
class PcmChunk:
    """Decoded samples of one audio frame."""

    samples: np.ndarray  # int16: shape (n,) for mono, (n, channels) otherwise
    sample_rate: int
    pts_us: int  # presentation time on the call's common A/V clock
    codec: str
    generated: bool = False  # silence from the media core's generator

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class PcmReader:
    """An async iterator over a stream's audio as :class:`PcmChunk`; it ends
    with the stream. Frames in codecs it cannot decode (none today besides
    G.711 and opus) are skipped and counted in ``skipped``."""

    def __init__(self, stream: Stream) -> None:
        self._sub: Subscription | None = stream.subscribe("audio")
        self._opus: Any = None
        self.skipped = 0

    def __aiter__(self) -> PcmReader:
        return self

    async def __anext__(self) -> PcmChunk:
        while self._sub is not None:
            frame = await self._sub.get()
            if frame is None:
                self.close()
                break
            if frame.codec in ("PCMU", "PCMA"):
                samples = np.frombuffer(g711_decode(frame.data, frame.codec), "<i2")
                return PcmChunk(samples, 8000, frame.pts_us, frame.codec, frame.generated)
            if frame.codec == "opus":
                return self._decode_opus(frame.data, frame.pts_us, frame.generated)
            self.skipped += 1
        raise StopAsyncIteration

    def _decode_opus(self, data: bytes, pts_us: int, generated: bool) -> PcmChunk:
        import av

        if self._opus is None:
            self._opus = av.CodecContext.create("libopus", "r")
            self._opus.sample_rate = 48000
            self._opus.layout = "stereo"
        parts = []
        for frame in self._opus.decode(av.Packet(data)):
            pcm = frame.to_ndarray()  # planar (channels, n) or packed (1, n * channels)
            if frame.format.is_planar:
                pcm = pcm.T
            else:
                pcm = pcm.reshape(-1, len(frame.layout.channels))
            if pcm.dtype != np.int16:
                pcm = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
            parts.append(pcm)
        samples = np.concatenate(parts) if parts else np.zeros((0, 2), np.int16)
        return PcmChunk(samples, 48000, pts_us, "opus", generated)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    async def __aenter__(self) -> PcmReader:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
