"""The Python API's audio for embedding apps: a stream's audio as numpy
int16 PCM (G.711 decoded in Rust, opus with PyAV), checked against the
callee's 440 Hz tone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from sipstream import PcmChunk
from sipstream.testing import LoopbackCallee

from .conftest import loopback_call
from .media_checks import dominant_hz, real_pcm


@pytest.mark.parametrize("codecs, codec, rate, channels", [
    ("ulaw,h264", "PCMU", 8000, 1),
    ("alaw,h264", "PCMA", 8000, 1),
    ("opus,h264", "opus", 48000, 2),
])
async def test_stream_audio_as_numpy_pcm(server_with: Any, callee: LoopbackCallee,
                                         codecs: str, codec: str, rate: int, channels: int) -> None:
    srv, rest = await server_with(codecs=codecs)
    await rest.post("/rest-api/call/startup", loopback_call(callee, "a1", "as1"))
    await rest.wait_status("a1", {"ESTABLISHED"})
    stream = srv.gateway.streams["as1"]
    chunks: list[PcmChunk] = await real_pcm(stream, 1.0)
    assert stream._subscribers["audio"] == []  # the reader let go of its subscription
    assert {(c.codec, c.sample_rate, c.channels) for c in chunks} == {(codec, rate, channels)}
    assert all(c.samples.dtype == np.int16 for c in chunks)
    assert all(abs(c.duration_s - 0.02) < 1e-9 for c in chunks)
    pts = [c.pts_us for c in chunks]
    assert all(0 < b - a < 60_000 for a, b in zip(pts, pts[1:], strict=False)), pts
    samples = np.concatenate([c.samples for c in chunks])
    assert np.abs(samples).max() > 2000  # a tone, not silence
    assert abs(dominant_hz(samples, rate) - 440) < 5
    await rest.post("/rest-api/call/terminate", {"callId": "a1"})


async def test_pcm_reader_ends_with_the_stream(server_with: Any, callee: LoopbackCallee) -> None:
    srv, rest = await server_with()
    await rest.post("/rest-api/call/startup", loopback_call(callee, "a2", "as2"))
    await rest.wait_status("a2", {"ESTABLISHED"})
    stream = srv.gateway.streams["as2"]
    received = 0

    async def read() -> None:
        nonlocal received
        async with stream.pcm() as audio:
            async for _ in audio:
                received += 1

    reader = asyncio.create_task(read())
    await asyncio.sleep(1)
    await rest.post("/rest-api/call/terminate", {"callId": "a2"})
    await asyncio.wait_for(reader, 10)
    assert received > 20
