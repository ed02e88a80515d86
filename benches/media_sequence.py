"""The packet sequence of the receive benchmarks (test_bench_media.py and
its loopback sender): SECONDS of 720p-like H.264 (FU-A, ~1200-byte packets;
IDR 60 KB every 2 s, P 12 KB, 30 fps) and PCMU (1.5 packets a video frame)."""

from __future__ import annotations

from sipstream._core import build_rtp, h264_packetize

SECONDS = 4


def sequence() -> list[bytes]:
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


PACKETS = sequence()
VIDEO_FRAMES = SECONDS * 30
AUDIO_FRAMES = SECONDS * 45
