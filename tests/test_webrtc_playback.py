"""Headless Chromium plays a call's stream over WHEP and through /player:
H.264 decoded, audio samples received, keyframe requests reach the SIP side."""

from __future__ import annotations

import asyncio

import pytest
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call
from .media_checks import MIN_FPS, PLAYBACK_MEASURE_S, assert_real_playback
from .peers.chromium import launch_chromium, page_stats, whep_play
from .peers.fixtures import require_chromium
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


async def test_chromium_plays_h264_and_pcmu_over_whep(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    await rest.start_call(loopback_call(callee, "w1", "ws1"))
    # Keyframe requests are throttled to one per second; let the first one pass.
    await asyncio.sleep(server.settings.keyframe_request_interval_ms / 1000 + 0.2)
    requests_before = callee.keyframe_requests
    viewer: dict = {}

    async def watch_viewer() -> None:
        # GET on the session's Location, while it plays: its RTCP-based stats
        while True:
            for session_id in list(server.whep.sessions):
                async with rest.http.get(f"{server.base_url}/whep/ws1/{session_id}") as res:
                    if res.status == 200:
                        viewer.update(await res.json())
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_viewer())
    try:
        stats = await whep_play(server.base_url + "/health", server.base_url + "/whep/ws1", seconds=25,
                                measure_s=PLAYBACK_MEASURE_S)
    finally:
        watcher.cancel()
    assert stats["whepStatus"] == 201 and stats["location"].startswith("/whep/ws1/")
    assert_real_playback(stats)
    assert stats["videoCodec"] == "video/H264" and stats["audioCodec"] == "audio/PCMU"
    # served by the engine's one port, with AES-GCM SRTP (Chromium offers it)
    assert stats["remoteAddress"] == f"127.0.0.1:{server.whep.port}", stats
    assert stats["srtpCipher"] in ("SRTP_AEAD_AES_256_GCM", "SRTP_AEAD_AES_128_GCM"), stats
    # the session's stats carried what Chromium's receiver reports said
    assert viewer.get("connected") and viewer["packets"] > 0, viewer
    assert viewer["rtt_ms"] is not None and viewer["rtt_ms"] < 100 and viewer["lost"] == 0, viewer
    # Joining asked the SIP side for a keyframe (RTCP PLI toward the callee).
    assert callee.keyframe_requests > requests_before
    # The viewer's DELETE ended its session.
    for _ in range(100):
        code, streams = await rest.post("/rest-api/stream/find", {"name": "ws1"})
        if streams[0]["viewers"] == 0:
            break
        await asyncio.sleep(0.1)
    assert streams[0]["viewers"] == 0


async def test_viewer_joining_mid_call_gets_a_picture_within_a_keyframe_interval(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "w2", "ws2"))
    await asyncio.sleep(3.3)  # well inside a GOP of the callee's loop
    async with launch_chromium() as ctx:
        stats = await whep_play(server.base_url + "/health", server.base_url + "/whep/ws2", seconds=6,
                                context=ctx, measure_s=1.0)
    # a picture of the far end, at its rate, before the next GOP of the loop
    assert stats["error"] is None and stats["measuredS"] >= 0.9, stats
    assert (stats["frameWidth"], stats["frameHeight"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), stats
    assert stats["fps"] >= MIN_FPS, stats


async def test_player_page_plays_and_shows_stream_status(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    await rest.start_call(loopback_call(callee, "w3", "ws3"))
    # The generator's 1 frame a second could not reach this count in the time
    # given: only the far end's 25 fps can.
    frames = 4 * SOURCE_FPS
    stats = await page_stats(server.base_url + "/player?stream=ws3", "window.sipstreamStats", timeout=30,
                             until=f"s => s && s.framesDecoded >= {frames} && s.audioSamplesReceived > 0")
    assert stats["framesDecoded"] >= frames and stats["audioSamplesReceived"] > 0, stats
    assert stats["streamStatus"] == "PUBLISHING"
    assert (stats["frameWidth"], stats["frameHeight"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)


async def test_viewers_are_released_when_the_call_ends(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    await rest.start_call(loopback_call(callee, "w4", "ws4"))
    async with launch_chromium() as ctx:
        stats = await whep_play(server.base_url + "/health", server.base_url + "/whep/ws4", seconds=15,
                                context=ctx, teardown=False, measure_s=1.0)
        assert stats["fps"] >= MIN_FPS, stats
        await rest.post("/rest-api/call/terminate", {"callId": "w4"})
        await rest.wait_status("w4", {"FINISH"})
    stream = server.gateway.streams["ws4"]
    assert stream.status == "UNPUBLISHED"
    for _ in range(50):
        if not server.whep.sessions:
            break
        await asyncio.sleep(0.1)
    assert server.whep.sessions == {}
    # A new viewer for an ended stream is refused.
    async with rest.http.post(server.base_url + "/whep/ws4", data="v=0\r\n",
                              headers={"Content-Type": "application/sdp"}) as res:
        assert res.status == 404


async def test_chromium_without_udp_plays_over_ice_tcp(server_with, callee: LoopbackCallee) -> None:
    """``ice_tcp_transport``: the answer also offers a passive ICE-TCP
    candidate (RFC 6544). A Chromium that may not use UDP for WebRTC (its
    profile's IP handling policy ``disable_non_proxied_udp``, as behind a
    firewall that blocks UDP; the command-line switch for it is ignored)
    connects over TCP and plays the stream."""
    server, rest = await server_with(ice_tcp_transport=True, webrtc_tcp_port=0)
    tcp_port = server.whep.engine.tcp_port
    assert tcp_port
    await rest.start_call(loopback_call(callee, "w9", "ws9"))
    no_udp = {"webrtc": {"ip_handling_policy": "disable_non_proxied_udp"}}
    async with launch_chromium(preferences=no_udp) as ctx:
        stats = await whep_play(server.base_url + "/health", server.base_url + "/whep/ws9", seconds=25,
                                measure_s=PLAYBACK_MEASURE_S, context=ctx)
    assert stats["whepStatus"] == 201, stats
    assert stats["remoteAddress"] == f"127.0.0.1:{tcp_port}", stats
    assert_real_playback(stats)
