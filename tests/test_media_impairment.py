"""The receive path under a bad network: the callee's RTP goes out with 1%
loss, 2% reordering and 30 ms jitter. With rtp_in_buffer every access unit
the stream publishes decodes, and the picture recovers after loss through
keyframe requests."""

from __future__ import annotations

import asyncio

import aiohttp
import av
from sipstream.server import Server
from sipstream.testing import Impairment, LoopbackCallee

from .conftest import Rest, loopback_call, make_settings


async def test_impaired_rtp_yields_only_decodable_frames_with_the_jitter_buffer() -> None:
    jitter_buffer = True
    impairment = Impairment(loss=0.01, reorder=0.02, jitter_ms=30, seed=3)
    callee = LoopbackCallee(width=320, height=240, loop_seconds=2, impairment=impairment)
    await callee.start()
    srv = Server(make_settings(rtp_in_buffer=jitter_buffer, keyframe_request_interval_ms=300))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
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
        assert impairment.lost > 0, impairment  # the network really lost packets
        assert frames > 60, (frames, errors, stats["video"])  # 25 fps for 8 s, minus what loss cost
        assert errors == 0, (errors, stats)
        assert stats["video"]["lost"] > 0 or stats["video"]["dropped_frames"] > 0
        assert callee.keyframe_requests > 0  # loss turned into PLI toward the callee
    finally:
        await srv.stop()
        await callee.stop()


async def test_impaired_rtp_still_flows_without_the_jitter_buffer() -> None:
    """With the buffer off, holes are not waited for, but packets reordered
    within their frame are still taken: frames flow with minimum delay, and
    a frame that lost a packet is dropped until the next keyframe (never a
    broken access unit)."""
    impairment = Impairment(loss=0.01, reorder=0.02, jitter_ms=30, seed=3)
    callee = LoopbackCallee(width=320, height=240, loop_seconds=2, impairment=impairment)
    await callee.start()
    srv = Server(make_settings(rtp_in_buffer=False, keyframe_request_interval_ms=300))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
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
        assert impairment.lost > 0, impairment
        assert frames > 25, (frames, errors, stats["video"])
        assert errors == 0, (errors, stats)
        assert stats["video"]["frames"] > 25, stats["video"]
    finally:
        await srv.stop()
        await callee.stop()
