"""Strict RTP: a call's media ports take RTP and RTCP only from its far end,
so a stranger's packets (a new SSRC, a negotiated payload type) neither take
over a live call's audio nor inject RTCP; they are counted as
``foreign_source``. And the media ports a call gets are not guessable from
the previous call's: the port allocator picks a random free block."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest
from sipstream import _core
from sipstream.media.ports import PortAllocator, PortRangeExhausted
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call, media_range, wait_until

STRANGER_SSRC = 0x0BAD_F00D
# 20 ms of one constant sample: nothing like the callee's 440 Hz tone
STRANGER_PAYLOAD = b"\x5a" * 160


def _rtcp_bye(ssrc: int) -> bytes:
    """An empty RR then a BYE of ``ssrc`` (RFC 3550 §6.4.2, §6.6)."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc) + struct.pack("!BBHI", 0x81, 203, 1, ssrc)


async def test_a_strangers_rtp_with_a_new_ssrc_does_not_take_over_a_live_call(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    """Needs the extension built from this tree (``foreign_source`` in the stats)."""
    await rest.start_call(loopback_call(callee, "lat1", "lat1s", hasVideo="false"))
    media = server.gateway.calls["lat1"].media
    assert media is not None and media.negotiated is not None and media.negotiated.audio is not None
    await wait_until(lambda: (media.stats().get("audio") or {}).get("frames", 0) >= 10, 10, "the far end's audio")
    real_ssrc = media.stats()["audio"]["ssrc"]
    assert real_ssrc is not None and real_ssrc != STRANGER_SSRC
    payload_type = media.negotiated.audio.main_codec.payload_type

    audio = server.gateway.streams["lat1s"].subscribe("audio")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        sent = 0
        # Two sequential packets back to back pass the SSRC probation of a
        # receiver that takes any source: ten such pairs, 20 ms apart.
        for pair in range(10):
            for k in range(2):
                seq = 2 * pair + k
                packet = _core.build_rtp(payload_type, seq, 160 * seq, STRANGER_SSRC, False, STRANGER_PAYLOAD)
                stranger.sendto(packet, ("127.0.0.1", media.audio_port))
                sent += 1
            await asyncio.sleep(0.02)
        stranger.sendto(_rtcp_bye(real_ssrc), ("127.0.0.1", media.audio_port + 1))
        sent += 1
    await wait_until(lambda: media.stats().get("foreign_source", 0) >= sent, 5, "the stranger's packets counted")

    # the far end keeps delivering, and only the far end: every frame the
    # stream got since before the injection is the callee's tone
    frames_before = media.stats()["audio"]["frames"]
    heard: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.5
    while loop.time() < deadline:
        frame = await asyncio.wait_for(audio.get(), 2)
        assert frame is not None
        if not frame.generated:
            heard.append(frame.data)
    audio.close()
    assert len(heard) >= 10 and STRANGER_PAYLOAD not in heard
    stats = media.stats()
    assert stats["audio"]["frames"] > frames_before
    assert (stats["audio"]["ssrc"], stats["audio"]["ssrc_changes"]) == (real_ssrc, 0)
    assert stats["foreign_source"] == sent
    found = (await rest.find_call("lat1"))[1][0]
    assert found["status"] == "ESTABLISHED"  # the injected BYE ended nothing
    assert found["stats"]["foreign_source"] == sent
    await rest.post("/rest-api/call/terminate", {"callId": "lat1"})


def _close(blocks: list[list[socket.socket]]) -> None:
    for block in blocks:
        for sock in block:
            sock.close()


def _base(block: list[socket.socket]) -> int:
    return int(block[0].getsockname()[1])


def test_port_allocator_hands_out_random_blocks_not_the_next_in_order() -> None:
    first, last = media_range()
    ports = PortAllocator(first, last, "127.0.0.1", rng=random.Random(7))
    blocks = [ports.allocate() for _ in range(6)]
    try:
        bases = [_base(b) for b in blocks]
        assert all(first <= b and b + 3 <= last and b % 2 == 0 for b in bases)
        assert all([s.getsockname()[1] for s in block] == list(range(_base(block), _base(block) + 4))
                   for block in blocks)
        assert len(set(bases)) == 6
        assert bases != sorted(bases)
        assert any(b - a != 4 for a, b in zip(bases, bases[1:], strict=False))
    finally:
        _close(blocks)


def test_two_allocators_start_at_different_blocks() -> None:
    first, last = media_range()
    starts = set()
    for seed in (1, 2, 3):
        ports = PortAllocator(first, last, "127.0.0.1", rng=random.Random(seed))
        block = ports.allocate()
        starts.add(_base(block))
        _close([block])
    assert len(starts) > 1


def test_port_allocator_visits_every_block_then_raises_and_reuses_a_released_one() -> None:
    first, _ = media_range()
    last = first + 4 * 12 - 1  # twelve blocks
    ports = PortAllocator(first, last, "127.0.0.1")
    blocks = [ports.allocate() for _ in range(12)]
    try:
        assert sorted(_base(b) for b in blocks) == list(range(first, last, 4))
        assert ports.in_use == 12
        with pytest.raises(PortRangeExhausted):
            ports.allocate()
        freed = blocks.pop(5)
        base = _base(freed)
        _close([freed])
        ports.release(base)
        again = ports.allocate()
        blocks.append(again)
        assert _base(again) == base
    finally:
        _close(blocks)


def test_port_allocator_skips_ports_other_programs_hold() -> None:
    first, _ = media_range()
    last = first + 4 * 3 - 1  # three blocks
    held = []
    for port in (first + 1, first + 4 + 3):  # one port of each of the first two blocks
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        held.append(sock)
    ports = PortAllocator(first, last, "127.0.0.1")
    try:
        for _ in range(5):  # whatever the random start, the one free block
            block = ports.allocate()
            assert _base(block) == first + 8
            with pytest.raises(PortRangeExhausted):
                ports.allocate()
            _close([block])
            ports.release(first + 8)
        assert ports.in_use == 0
    finally:
        for sock in held:
            sock.close()
