"""RTMP relay to nginx-rtmp on loopback: what the server records is checked
with ffprobe/ffmpeg (H.264 + AAC, duration, clean decode, A/V start), plus
the /push/* contract and the fault cases (refusal, restart mid-relay)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call
from .media_checks import real_frames_grow
from .peers import avcheck
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures)
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH
from .test_peers_rtmp_smoke import nginx_rtmp, nginx_rtmp_factory, require_ffmpeg  # noqa: F401

pytestmark = pytest.mark.peers


async def _relay_status(rest: Rest, name: str, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
    last = None
    for _ in range(int(timeout / 0.1)):
        code, relays = await rest.post("/rest-api/push/find", {"streamName": name})
        if code == 200:
            last = relays[0]
            if last["status"] in statuses:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"relay {name} never reached {statuses}: {last}")


async def test_relayed_call_records_h264_and_aac_in_sync(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    require_ffmpeg()
    await rest.start_call(loopback_call(callee, "r1", "rs1"))
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "rs1", "rtmpUrl": nginx_rtmp.url})
    assert code == 200
    assert relay["streamName"] == "rtmp_rs1" and relay["rtmpUrl"] == nginx_rtmp.url
    assert {"mediaSessionId", "width", "height", "muted", "soundEnabled", "options"} <= relay.keys()
    await _relay_status(rest, "rtmp_rs1", {"PUBLISHING"})
    started = time.monotonic()
    await asyncio.sleep(6)
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": relay["mediaSessionId"]}))[0] == 200
    relayed_s = time.monotonic() - started
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_rs1", 10)
    assert path is not None
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert (info["video"]["width"], info["video"]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    duration = float(info["format"]["duration"])
    # at least the time waited (less the first keyframe), at most the time that passed
    assert 5.0 <= duration <= relayed_s + 0.5, (duration, relayed_s)
    assert await asyncio.to_thread(avcheck.decode_errors, str(path)) == ""
    offset = await asyncio.to_thread(avcheck.av_start_offset_ms, str(path))
    assert abs(offset) < 100, offset
    assert (await rest.post("/rest-api/push/find", {"streamName": "rtmp_rs1"}))[0] == 404


async def test_push_contract_errors(server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any) -> None:
    await rest.start_call(loopback_call(callee, "r2", "rs2"))
    code, body = await rest.post("/rest-api/push/startup", {"streamName": "rs2"})
    assert code == 400 and "rtmpUrl" in body["error"]
    code, body = await rest.post("/rest-api/push/startup", {"streamName": "rs2", "rtmpUrl": "http://x/live"})
    assert code == 400 and "rtmpUrl" in body["error"]
    code, body = await rest.post("/rest-api/push/startup", {"streamName": "nope", "rtmpUrl": nginx_rtmp.url})
    assert code == 404
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "rs2", "rtmpUrl": nginx_rtmp.url})
    assert code == 200
    code, body = await rest.post("/rest-api/push/startup", {"streamName": "rs2", "rtmpUrl": nginx_rtmp.url})
    assert code == 409
    assert (await rest.post("/rest-api/push/mute", {"mediaSessionId": relay["mediaSessionId"]}))[0] == 200
    code, found = await rest.post("/rest-api/push/find_all")
    assert code == 200 and found[0]["muted"] is True
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": "nope"}))[0] == 404
    # The call itself is untouched by all of this.
    assert (await rest.find_call("r2"))[1][0]["status"] == "ESTABLISHED"


async def test_refusing_server_is_reported_and_the_call_goes_on(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp_factory: Any
) -> None:
    refusing = nginx_rtmp_factory(allow_publish=False)
    await rest.start_call(loopback_call(callee, "r3", "rs3"))
    await rest.post("/rest-api/push/startup", {"streamName": "rs3", "rtmpUrl": refusing.url})
    relay = await _relay_status(rest, "rtmp_rs3", {"RECONNECTING", "FAILED"}, timeout=20)
    assert relay["info"]
    assert (await rest.find_call("r3"))[1][0]["status"] == "ESTABLISHED"
    await real_frames_grow(server.gateway.streams["rs3"], "video")  # the far end's media still flows


async def test_relay_survives_an_rtmp_server_restart(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    await rest.start_call(loopback_call(callee, "r4", "rs4"))
    await rest.post("/rest-api/push/startup", {"streamName": "rs4", "rtmpUrl": nginx_rtmp.url})
    await _relay_status(rest, "rtmp_rs4", {"PUBLISHING"})
    await asyncio.sleep(2)
    await asyncio.to_thread(nginx_rtmp.restart, 1.5)
    relay = await _relay_status(rest, "rtmp_rs4", {"PUBLISHING"}, timeout=30)
    assert relay["attempts"] >= 2
    await asyncio.sleep(2.5)
    assert len(nginx_rtmp.recordings("rtmp_rs4")) >= 2


async def test_sip_as_rtmp_pushes_the_call_and_reports_its_status(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    await rest.start_call(loopback_call(callee, "r5", "rs5", rtmpUrl=nginx_rtmp.url, rtmpStream="direct5"))
    for _ in range(100):
        call = (await rest.find_call("r5"))[1][0]
        if call["rtmpStreamStatus"] == "PUBLISHING":
            break
        await asyncio.sleep(0.1)
    assert call["rtmpStreamStatus"] == "PUBLISHING" and call["rtmpStream"] == "direct5"
    await asyncio.sleep(2)
    await rest.post("/rest-api/call/terminate", {"callId": "r5"})
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "direct5", 10)
    assert path is not None
    assert await asyncio.to_thread(avcheck.decode_errors, str(path)) == ""


async def test_audio_only_call_is_relayed_with_a_generated_video_track(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    require_ffmpeg()
    await rest.start_call(loopback_call(callee, "r6", "rs6", hasVideo="false"))
    await rest.post("/rest-api/push/startup", {"streamName": "rs6", "rtmpUrl": nginx_rtmp.url})
    await _relay_status(rest, "rtmp_rs6", {"PUBLISHING"})
    await asyncio.sleep(4)
    await rest.post("/rest-api/call/terminate", {"callId": "r6"})
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_rs6", 10)
    assert path is not None
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert await asyncio.to_thread(avcheck.decode_errors, str(path)) == ""
    assert float(info["format"]["duration"]) > 3


async def test_relay_keeps_audio_and_video_in_sync(server_with: Any, nginx_rtmp: Any) -> None:
    """White flash and 1 kHz beep leave the callee together every 2 s; in
    what nginx-rtmp recorded they must still meet: |offset| and drift small."""
    require_ffmpeg()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, sync_marks=True)
    await callee.start()
    try:
        _, rest = await server_with()
        await rest.start_call(loopback_call(callee, "r7", "rs7"))
        await rest.post("/rest-api/push/startup", {"streamName": "rs7", "rtmpUrl": nginx_rtmp.url})
        await _relay_status(rest, "rtmp_rs7", {"PUBLISHING"})
        await asyncio.sleep(60)
        await rest.post("/rest-api/call/terminate", {"callId": "r7"})
        path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_rs7", 10)
        assert path is not None
        sync = await asyncio.to_thread(avcheck.measure_av_sync, str(path), 25, 1000.0, 2.0)
        print("AVSYNC", {k: sync[k] for k in ("pairs", "mean_ms", "max_abs_ms", "drift_ms_per_min")})
        assert sync["pairs"] >= 28, sync
        assert sync["max_abs_ms"] <= 60, sync
        assert abs(sync["drift_ms_per_min"]) < 40, sync
    finally:
        await callee.stop()


async def test_relay_started_before_the_answer_waits_for_the_media(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, nginx_rtmp: Any
) -> None:
    from .test_sip_kamailio import alice_call

    require_ffmpeg()
    bob = sipp_uas_factory("uas_answer", answer_delay_ms=2000)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "r8", "rs8"))
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "rs8", "rtmpUrl": nginx_rtmp.url})
    assert code == 200  # the stream name is reserved by the call before it is answered
    assert (await rest.find_call("r8"))[1][0]["status"] in ("PENDING", "TRYING", "RING")
    await rest.wait_status("r8", {"ESTABLISHED"}, timeout=20)
    await _relay_status(rest, "rtmp_rs8", {"PUBLISHING"})
    await asyncio.sleep(4)
    await rest.post("/rest-api/call/terminate", {"callId": "r8"})
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_rs8", 10)
    assert path is not None
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert await asyncio.to_thread(avcheck.decode_errors, str(path)) == ""
    assert await asyncio.to_thread(bob.wait, 15) == 0


async def test_video_call_without_audio_is_relayed_with_generated_silence(
    server: Server, rest: Rest, nginx_rtmp: Any
) -> None:
    require_ffmpeg()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, send_audio=False)
    await callee.start()
    try:
        await rest.start_call(loopback_call(callee, "r9", "rs9"))
        await rest.post("/rest-api/push/startup", {"streamName": "rs9", "rtmpUrl": nginx_rtmp.url})
        await _relay_status(rest, "rtmp_rs9", {"PUBLISHING"})
        await asyncio.sleep(4)
        stream = server.gateway.streams["rs9"]
        # only generated audio (silence after generate_av_start_delay)
        assert stream.generated["audio"] > 0 and stream.generated["audio"] == stream.frames["audio"]
        await rest.post("/rest-api/call/terminate", {"callId": "r9"})
        path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_rs9", 10)
        assert path is not None
        info = await asyncio.to_thread(avcheck.probe, str(path))
        assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
        assert await asyncio.to_thread(avcheck.decode_errors, str(path)) == ""
    finally:
        await callee.stop()
