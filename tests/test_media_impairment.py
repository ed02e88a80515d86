"""The receive path under a bad network: the callee's RTP goes out with 1%
loss, 2% reordering and 30 ms jitter. Every access unit the stream publishes
decodes (never a broken one). With rtp_in_buffer the picture recovers after
loss through keyframe requests; with the buffer off, holes are not waited
for but packets reordered within their frame are still taken, so frames
flow with minimum delay."""

from __future__ import annotations

import asyncio
from typing import Any

import av
from sipstream.testing import Impairment, LoopbackCallee

from .conftest import loopback_call
from .peers.chromium import whep_play
from .peers.fixtures import require_chromium
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH


async def _play_impaired(server_with: Any, jitter_buffer: bool) -> tuple[Impairment, LoopbackCallee, int, int, dict]:
    """(impairment, callee, frames decoded, decode errors, call stats) after 8 s."""
    impairment = Impairment(loss=0.01, reorder=0.02, jitter_ms=30, seed=3)
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, impairment=impairment)
    await callee.start()
    try:
        srv, rest = await server_with(rtp_in_buffer=jitter_buffer, keyframe_request_interval_ms=300)
        await rest.post("/rest-api/call/startup", loopback_call(callee, "j1", "js1", hasAudio="false"))
        await rest.wait_status("j1", {"ESTABLISHED"})
        video = srv.gateway.streams["js1"].subscribe("video")
        decoder = av.CodecContext.create("h264", "r")
        frames = errors = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while loop.time() < deadline:
            try:
                unit = await asyncio.wait_for(video.get(), 2)
            except asyncio.TimeoutError:
                break
            assert unit is not None
            try:
                frames += len(decoder.decode(av.Packet(unit.data)))
            except av.error.FFmpegError:
                errors += 1
        stats = (await rest.find_call("j1"))[1][0]["stats"]
        await rest.post("/rest-api/call/terminate", {"callId": "j1"})
        return impairment, callee, frames, errors, stats
    finally:
        await callee.stop()


async def test_impaired_rtp_yields_only_decodable_frames_with_the_jitter_buffer(server_with: Any) -> None:
    impairment, callee, frames, errors, stats = await _play_impaired(server_with, True)
    assert impairment.lost > 0, impairment  # the network really lost packets
    assert frames > 60, (frames, errors, stats["video"])  # 25 fps for 8 s, minus what loss cost
    assert errors == 0, (errors, stats)
    assert stats["video"]["lost"] > 0 or stats["video"]["dropped_frames"] > 0
    assert callee.keyframe_requests > 0  # loss turned into PLI toward the callee


async def test_impaired_rtp_still_flows_without_the_jitter_buffer(server_with: Any) -> None:
    impairment, _, frames, errors, stats = await _play_impaired(server_with, False)
    assert impairment.lost > 0, impairment
    assert frames > 25, (frames, errors, stats["video"])
    assert errors == 0, (errors, stats)
    assert stats["video"]["frames"] > 25, stats["video"]


async def test_chromium_plays_an_impaired_call_without_undecodable_frames(server_with: Any) -> None:
    """The SIP leg loses 1%, reorders 2% and jitters 30 ms; with the jitter
    buffer on, Chromium decodes steadily: nothing it receives is undecodable
    (it would ask for keyframes itself and drop frames), and each loss costs
    at most a short freeze, until the keyframe we asked the callee for."""
    require_chromium()
    impairment = Impairment(loss=0.01, reorder=0.02, jitter_ms=30, seed=5)
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, impairment=impairment)
    await callee.start()
    try:
        srv, rest = await server_with(rtp_in_buffer=True, keyframe_request_interval_ms=300)
        await rest.post("/rest-api/call/startup", loopback_call(callee, "j3", "js3"))
        await rest.wait_status("j3", {"ESTABLISHED"})
        stats = await whep_play(srv.base_url + "/health", srv.base_url + "/whep/js3", seconds=12,
                                wait_for_media=False)
        call = (await rest.find_call("j3"))[1][0]
        await rest.post("/rest-api/call/terminate", {"callId": "j3"})
    finally:
        await callee.stop()
    print("IMPAIRED CHROMIUM", {k: stats[k] for k in (
        "framesDecoded", "framesReceived", "keyFramesDecoded", "framesDropped", "freezeCount",
        "totalFreezesDuration", "pliCount", "firCount", "nackCount", "videoPacketsLost")},
        "sip side", call["stats"]["video"], "impairment", impairment)
    assert stats["error"] is None, stats
    assert impairment.lost > 0 and call["stats"]["video"]["lost"] > 0, call["stats"]
    assert callee.keyframe_requests > 0
    # 25 fps for 12 s minus what the SIP leg's losses cost until their keyframe
    assert stats["framesDecoded"] > 200, stats
    assert (stats["frameWidth"], stats["frameHeight"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), stats
    # nothing arrived that Chromium could not decode (a few frames are in its
    # decoder's pipeline when the stats are read)
    assert stats["framesDropped"] == 0 and stats["framesReceived"] - stats["framesDecoded"] <= 5, stats
    assert stats["pliCount"] + stats["firCount"] <= 2, stats
    # each loss: a freeze until the keyframe it asked for (the buffer first
    # waits up to 500 ms for a retransmission), never a long one
    if stats["freezeCount"]:
        assert stats["totalFreezesDuration"] / stats["freezeCount"] < 1.5, stats
    assert stats["totalFreezesDuration"] < 0.4 * 12, stats
