"""Receive-path benchmark, Python API against aiortc in the same run: the
same synthesized 720p-like H.264 (FU-A, ~1200-byte packets; IDR 60 KB every
2 s, P 12 KB) + PCMU packet sequence (media_sequence.py, 1580 packets)
through

- sipstream's sans-IO ``MediaSession`` with the **batch** API
  (``receive_batch``, 64 datagrams a call), as ``MediaIo`` uses it;
- sipstream's ``MediaSession`` **per packet** (``handle_receive`` then
  ``poll_output`` after every packet), the API shape aiortc has;
- aiortc's Python path **per packet** (``RtpPacket.parse`` + ``depayload``
  + ``JitterBuffer``);
- a reference with no media work at all: the packets received one by one by
  an asyncio ``DatagramProtocol`` on loopback, sent by another process on
  the load core (socket cost of a per-packet Python receive loop).

Timer: this process's CPU time (benches/conftest.py), pinned to one core.
The receive paths run on media time (SECONDS of packets over SECONDS of the
session clock), so the jitter buffer holds what a live call's would.
Ratios (benches/report.py): aiortc per packet / sipstream batch, and
aiortc per packet / sipstream per packet, from the medians of one run.
The Rust-side socket→frame throughput is
``cargo run --release --example rtp_receive_throughput``."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchutil import on_load_cpu
from media_sequence import AUDIO_FRAMES, PACKETS, SECONDS, VIDEO_FRAMES
from sipstream._core import Frame, MediaConfig, MediaSession

BATCH = 64
MEDIA_S_PER_PACKET = SECONDS / len(PACKETS)
SOURCE = ("127.0.0.1", 5004)
LOOPBACK_TIMEOUT_S = 5.0


def _info(benchmark: Any, api: str, packets: int = len(PACKETS)) -> None:
    benchmark.extra_info["api"] = api
    benchmark.extra_info["packets"] = packets
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_packet"] = benchmark.stats.stats.median / packets * 1e6


def _session() -> MediaSession:
    return MediaSession(MediaConfig({0: ("PCMU", 8000), 96: ("H264", 90000)},
                                    video_rtcp_fb=["nack", "nack pli"]), 0.0)


def _drain(session: MediaSession) -> int:
    frames = 0
    while True:
        out = session.poll_output()
        if isinstance(out, float):
            return frames
        if isinstance(out, Frame):
            frames += 1


def run_sipstream_batch() -> int:
    session = _session()
    frames = 0
    for i in range(0, len(PACKETS), BATCH):
        frames += len(session.receive_batch(i * MEDIA_S_PER_PACKET, PACKETS[i:i + BATCH], SOURCE))
    session.handle_timeout(10.0)
    return frames + _drain(session)


def run_sipstream_per_packet() -> int:
    session = _session()
    frames = 0
    for i, packet in enumerate(PACKETS):
        session.handle_receive(i * MEDIA_S_PER_PACKET, packet, SOURCE)
        frames += _drain(session)
    session.handle_timeout(10.0)
    return frames + _drain(session)


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


class _Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done: asyncio.Event | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.count += 1
        if self.count == self.target and self.done is not None:
            self.done.set()


class LoopbackReference:
    """A persistent asyncio loop and UDP socket in this process; the sender
    (udp_sender.py) is another process on the load core."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # root: past net.core.rmem_max, so no burst is dropped
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.transport, self.protocol = self.loop.run_until_complete(
            self.loop.create_datagram_endpoint(_Counter, sock=sock))
        with on_load_cpu():
            self.sender = subprocess.Popen([sys.executable, str(Path(__file__).with_name("udp_sender.py"))],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

    def round(self) -> int:
        """Receive the whole sequence once; fails (never returns a short count) on a timeout."""
        assert self.sender.stdin is not None
        protocol = self.protocol
        protocol.count, protocol.target = 0, len(PACKETS)
        protocol.done = asyncio.Event()
        self.sender.stdin.write(f"{self.port}\n")
        self.sender.stdin.flush()
        try:
            self.loop.run_until_complete(asyncio.wait_for(protocol.done.wait(), LOOPBACK_TIMEOUT_S))
        except TimeoutError:
            pytest.fail(f"loopback reference: {protocol.count} of {len(PACKETS)} packets arrived "
                        f"in {LOOPBACK_TIMEOUT_S} s (dropped by the kernel?)")
        return protocol.count

    def close(self) -> None:
        assert self.sender.stdin is not None
        self.sender.stdin.close()
        self.sender.wait(5)
        self.transport.close()
        self.loop.close()


def test_receive_sipstream_batch(benchmark: Any) -> None:
    frames = benchmark(run_sipstream_batch)
    _info(benchmark, "sipstream MediaSession.receive_batch, 64 packets a call (batch)")
    assert frames == VIDEO_FRAMES + AUDIO_FRAMES


def test_receive_sipstream_per_packet(benchmark: Any) -> None:
    frames = benchmark(run_sipstream_per_packet)
    _info(benchmark, "sipstream MediaSession.handle_receive + poll_output (per packet)")
    assert frames == VIDEO_FRAMES + AUDIO_FRAMES


def test_receive_aiortc(benchmark: Any) -> None:
    frames = benchmark(run_aiortc)
    _info(benchmark, "aiortc RtpPacket.parse + depayload + JitterBuffer.add (per packet)")
    assert frames > VIDEO_FRAMES  # aiortc's buffers hold back the tail


def test_receive_asyncio_loopback_reference(benchmark: Any) -> None:
    reference = LoopbackReference()
    try:
        reference.round()  # warm-up: the sender process is up
        received = benchmark(reference.round)
    finally:
        reference.close()
    _info(benchmark, "asyncio DatagramProtocol, sockets only (per packet)", received)
    assert received == len(PACKETS)
