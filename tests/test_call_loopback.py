"""A whole call against the built-in loopback callee (a real SIP UAS sending
real RTP over loopback): statuses, the stream's frames, BYE, CANCEL, and the
call disappearing after ``call_keep_finished_s``."""

from __future__ import annotations

import asyncio

from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call
from .media_checks import assert_real_video, assert_tone
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH


async def test_call_reaches_established_and_publishes_h264_and_audio(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    assert (await rest.post("/rest-api/call/startup", loopback_call(callee, "c1", "s1")))[0] == 200
    call = await rest.wait_status("c1", {"ESTABLISHED"})
    assert call["sipStatus"] == 200 and call["streamName"] == "s1" and call["incoming"] is False

    stream = server.gateway.streams["s1"]
    video = stream.subscribe("video")
    audio = stream.subscribe("audio")
    first_video = await asyncio.wait_for(video.get(), 5)
    first_audio = await asyncio.wait_for(audio.get(), 5)
    video.close()
    audio.close()
    assert first_video is not None and first_video.keyframe and first_video.codec == "H264"
    assert first_video.data.startswith(b"\x00\x00\x00\x01")
    assert first_audio is not None and first_audio.codec == "PCMU" and len(first_audio.data) == 160
    # The far end's own picture and tone, not the generator's placeholders.
    await assert_real_video(stream)
    assert await assert_tone(stream, 440.0) == "PCMU"

    code, streams = await rest.post("/rest-api/stream/find", {"name": "s1"})
    assert code == 200
    assert streams[0]["status"] == "PUBLISHING"
    assert (streams[0]["width"], streams[0]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    assert streams[0]["videoCodec"] == "H264" and streams[0]["audioCodec"] == "PCMU"


async def test_terminate_sends_bye_then_finish_then_404(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    await rest.post("/rest-api/call/startup", loopback_call(callee, "c2", "s2"))
    await rest.wait_status("c2", {"ESTABLISHED"})
    assert (await rest.post("/rest-api/call/terminate", {"callId": "c2"}))[0] == 200
    call = await rest.wait_status("c2", {"FINISH"})
    assert call["info"] == "Normal call clearing"
    for _ in range(50):  # FINISH is shown as the BYE goes out
        if "BYE" in callee.received:
            break
        await asyncio.sleep(0.02)
    assert "BYE" in callee.received
    code, streams = await rest.post("/rest-api/stream/find", {"name": "s2"})
    assert code == 200 and streams[0]["status"] == "UNPUBLISHED"
    await rest.wait_gone("c2", server.settings.call_keep_finished_s)
    # The stream name is free again.
    assert (await rest.post("/rest-api/call/startup", loopback_call(callee, "c3", "s2")))[0] == 200
    await rest.wait_status("c3", {"ESTABLISHED"})


async def test_media_ports_are_released_after_the_call(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    for i in range(3):
        await rest.post("/rest-api/call/startup", loopback_call(callee, f"p{i}", f"ps{i}"))
        await rest.wait_status(f"p{i}", {"ESTABLISHED"})
        await rest.post("/rest-api/call/terminate", {"callId": f"p{i}"})
        await rest.wait_status(f"p{i}", {"FINISH"})
    assert server.gateway.ports.in_use == 0


async def test_unreachable_sip_server_fails_with_request_timeout(server: Server, rest: Rest) -> None:
    body = {"callId": "u1", "callee": "x", "toStream": "u1", "sipLogin": "a", "sipDomain": "127.0.0.1",
            "sipPort": "9", "hasAudio": "true", "hasVideo": "false"}
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    call = await rest.wait_status("u1", {"FAILED"}, timeout=15)
    assert call["info"] == "Failed by request timeout"
    assert server.gateway.ports.in_use == 0


async def test_rtt_is_measured_from_the_echo_of_our_sender_reports(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    """rtp_session_init_always primes the far end with a few RTP packets, so
    our next RTCP report is an SR; the callee's RR echoes it (LSR, DLSR) and
    the call's stats show the round trip (loopback: a few ms at most)."""
    await rest.post("/rest-api/call/startup", loopback_call(callee, "c5", "s5"))
    await rest.wait_status("c5", {"ESTABLISHED"})
    rtt = None
    for _ in range(120):  # the first report goes out 2.5-7.5 s after the start
        stats = (await rest.find_call("c5"))[1][0]["stats"]
        rtt = stats["audio"]["rtt_ms"]
        if rtt is not None:
            break
        await asyncio.sleep(0.1)
    assert callee.sender_reports_received > 0
    assert rtt is not None and 0 <= rtt < 50, stats["audio"]
    assert stats["video"]["rtt_ms"] is None  # nothing was sent on video: RRs only
    await rest.post("/rest-api/call/terminate", {"callId": "c5"})
