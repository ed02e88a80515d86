"""Receive-path benchmark: the same synthesized 720p-ish H.264 (FU-A,
~1200-byte packets; IDR 60 KB every 2 s, P 12 KB) + PCMU packet sequence
through (a) sipstream's sans-IO MediaSession fed from Python in batches,
(b) aiortc's Python path (RtpPacket.parse + depayload + JitterBuffer),
(c) a plain asyncio DatagramProtocol over loopback (socket cost only).

Run: /tmp/venv/bin/pytest benches/test_bench_media.py --benchmark-only
Per-packet figures are in each benchmark's extra_info ("us_per_packet").
The Rust-side socket→frame throughput is
``cargo run --release --example rtp_receive_throughput``."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from sipstream._core import MediaConfig, MediaSession, build_rtp, h264_packetize

SECONDS = 4
BATCH = 64


def _sequence() -> list[bytes]:
    packets: list[bytes] = []
    vseq = aseq = 0
    for f in range(SECONDS * 30):
        key = f % 60 == 0
        size = 60_000 if key else 12_000
        body = bytes((i % 251) + 1 for i in range(size))
        au = b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41") + body
        payloads = h264_packetize(au, 1200)
        for k, p in enumerate(payloads):
            packets.append(build_rtp(96, vseq & 0xFFFF, f * 3000, 0xBBBB, k == len(payloads) - 1, p))
            vseq += 1
        for _ in range(2 if f % 2 == 0 else 1):
            packets.append(build_rtp(0, aseq & 0xFFFF, aseq * 160, 0xAAAA, False, b"\xff" * 160))
            aseq += 1
    return packets


PACKETS = _sequence()
VIDEO_FRAMES = SECONDS * 30
AUDIO_FRAMES = SECONDS * 45


MEDIA_S_PER_PACKET = SECONDS / len(PACKETS)


def _per_packet(benchmark) -> None:  # type: ignore[no-untyped-def]
    if benchmark.stats is not None:
        benchmark.extra_info["packets"] = len(PACKETS)
        benchmark.extra_info["us_per_packet"] = benchmark.stats.stats.mean / len(PACKETS) * 1e6


def run_sipstream() -> int:
    session = MediaSession(MediaConfig({0: ("PCMU", 8000), 96: ("H264", 90000)},
                                       video_rtcp_fb=["nack", "nack pli"]), 0.0)
    frames = 0
    source = ("127.0.0.1", 5004)
    for i in range(0, len(PACKETS), BATCH):
        # the session's clock follows the media (SECONDS of packets over
        # SECONDS), so its jitter buffer holds what a live call's would
        frames += len(session.receive_batch(i * MEDIA_S_PER_PACKET, PACKETS[i:i + BATCH], source))
    session.handle_timeout(10.0)
    while not isinstance(session.poll_output(), float):
        frames += 1
    return frames


def run_aiortc() -> int:
    from aiortc.codecs import depayload
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtp import RtpPacket

    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=96)
    pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
    video = JitterBuffer(capacity=512, is_video=True)
    audio = JitterBuffer(capacity=16, prefetch=4)
    frames = 0
    for data in PACKETS:
        packet = RtpPacket.parse(data)
        codec, jb = (h264, video) if packet.payload_type == 96 else (pcmu, audio)
        packet._data = depayload(codec, packet.payload)  # type: ignore[attr-defined]
        _, frame = jb.add(packet)
        if frame is not None:
            frames += 1
    return frames


def run_asyncio_loopback() -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = 0

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                nonlocal count
                count += 1
                if count == len(PACKETS):
                    done.set()

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind(("127.0.0.1", 0))
        transport, _ = await loop.create_datagram_endpoint(Protocol, sock=sock)
        addr = sock.getsockname()

        def send() -> None:
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for p in PACKETS:
                tx.sendto(p, addr)
            tx.close()

        threading.Thread(target=send).start()
        try:
            await asyncio.wait_for(done.wait(), 10)
        except TimeoutError:
            pass
        transport.close()
        return count

    return asyncio.run(main())


def test_bench_receive_sipstream_media_session(benchmark) -> None:  # type: ignore[no-untyped-def]
    frames = benchmark(run_sipstream)
    _per_packet(benchmark)
    assert frames == VIDEO_FRAMES + AUDIO_FRAMES


def test_bench_receive_aiortc_python_path(benchmark) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("aiortc")
    frames = benchmark(run_aiortc)
    _per_packet(benchmark)
    assert frames > VIDEO_FRAMES  # aiortc's buffers hold back the tail


def test_bench_receive_asyncio_loopback_reference(benchmark) -> None:  # type: ignore[no-untyped-def]
    received = benchmark.pedantic(run_asyncio_loopback, rounds=5, iterations=1)
    _per_packet(benchmark)
    assert received > 0
