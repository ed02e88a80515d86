"""RTMP relay of a call answered by sipp (through Kamailio), checked in what
nginx-rtmp recorded: H.264 + AAC, duration, clean decode, A/V start and
flash/beep sync over 60 s; and an ``rtmpUrl`` with credentials, whose
password never shows in /push/* answers nor in the logs."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call
from .peers import avcheck
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH, pcap_flash_beep_times
from .peers.sipp import flash_beep_media
from .test_peers_rtmp_smoke import nginx_rtmp, nginx_rtmp_factory, require_ffmpeg  # noqa: F401
from .test_rtmp_relay import _relay_status
from .test_sip_kamailio import alice_call

pytestmark = pytest.mark.peers

RELAY_S = 60.0
MEDIA_S = 65          # sipp's pcaps: longer than the call, played once
PERIOD_S = 2.0        # one flash + beep every 2 s
TONE_HZ = 1000.0


def test_flash_beep_pcaps_coincide_in_the_source() -> None:
    """The material itself: every flash frame and beep onset at the same pcap time and the
    same RTP time (from each stream's start), within 1 ms."""
    audio_pcap, video_pcap = flash_beep_media(MEDIA_S)
    src = pcap_flash_beep_times(video_pcap, audio_pcap, seconds=MEDIA_S, tone_hz=TONE_HZ)
    expected = int(MEDIA_S / PERIOD_S) + 1
    for flashes, beeps in (("flashes", "beeps"), ("rtp_flashes", "rtp_beeps")):
        assert len(src[flashes]) == len(src[beeps]) == expected, (flashes, len(src[flashes]), len(src[beeps]))
        worst = max(abs(b - f) for f, b in zip(src[flashes], src[beeps], strict=True)) * 1000
        assert worst <= 1.0, f"{flashes}/{beeps}: flash and beep {worst:.2f} ms apart in the source"
        assert [round(f, 3) for f in src[flashes]] == [k * PERIOD_S for k in range(expected)]


async def test_call_answered_by_sipp_is_relayed_to_nginx_in_sync(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, nginx_rtmp: Any
) -> None:
    require_ffmpeg()
    audio_pcap, video_pcap = await asyncio.to_thread(flash_beep_media, MEDIA_S)
    bob = sipp_uas_factory("uas_answer", audio_pcap=audio_pcap, video_pcap=video_pcap,
                           bye_timeout_s=RELAY_S + 60, loop_media=False)
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio, "s1", "ss1")))[0] == 200
    call = await rest.wait_status("s1", {"ESTABLISHED"}, timeout=20)
    assert call["callee"] == "bob" and call["sipStatus"] == 200

    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "ss1", "rtmpUrl": nginx_rtmp.url})
    assert code == 200, relay
    await _relay_status(rest, "rtmp_ss1", {"PUBLISHING"})
    started = time.monotonic()
    await asyncio.sleep(RELAY_S)
    found = (await rest.post("/rest-api/push/find", {"streamName": "rtmp_ss1"}))[1][0]
    assert found["status"] == "PUBLISHING" and found["attempts"] == 1, found  # never dropped
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": relay["mediaSessionId"]}))[0] == 200
    relay_s = time.monotonic() - started
    assert (await rest.post("/rest-api/call/terminate", {"callId": "s1"}))[0] == 200
    await rest.wait_status("s1", {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("BYE")

    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_ss1", 10)
    assert path is not None
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
    assert (info["video"]["width"], info["video"]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    duration = float(info["format"]["duration"])
    errors = await asyncio.to_thread(avcheck.decode_errors, str(path))
    start_offset = await asyncio.to_thread(avcheck.av_start_offset_ms, str(path))
    sync = await asyncio.to_thread(avcheck.measure_av_sync, str(path), 25, TONE_HZ, PERIOD_S)
    offsets = sync["offsets_ms"]
    first_last = offsets[-1] - offsets[0] if len(offsets) >= 2 else None
    summary = (f"relay {relay_s:.2f} s, FLV duration {duration:.2f} s, start offset {start_offset:+.1f} ms, "
               f"pairs {sync['pairs']} (unpaired flashes {sync['unpaired_flashes']}, beeps "
               f"{sync['unpaired_beeps']}), mean {sync['mean_ms']} ms, max |offset| {sync['max_abs_ms']} ms, "
               f"drift first->last {first_last} ms, fitted {sync['drift_ms_per_min']:+.1f} ms/min, "
               f"offsets {offsets}")
    print("SIPP RTMP AVSYNC:", summary)
    # at least the time relayed (less the first keyframe), at most the time that passed
    assert RELAY_S - 1.0 <= duration <= relay_s + 0.5, summary
    assert errors == "", f"decode errors: {errors[:2000]}"
    assert abs(start_offset) <= 100, summary
    # 60 s at one flash per 2 s: ~30 pairs; a pair may be lost at the very start or end.
    assert sync["pairs"] >= int(RELAY_S / PERIOD_S) - 2, summary
    assert sync["max_abs_ms"] <= 100, summary
    assert first_last is not None and abs(first_last) < 40, summary
    span_min = (sync["pair_times_s"][-1] - sync["pair_times_s"][0]) / 60
    assert abs(sync["drift_ms_per_min"] * span_min) < 40, summary


async def test_rtmp_url_with_credentials_publishes_and_the_password_never_shows(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    require_ffmpeg()
    caplog.set_level(logging.DEBUG)
    secret = "pw-S3cr3t-5"
    url = f"rtmp://relayuser:{secret}@127.0.0.1:{nginx_rtmp.port}/live"
    assert (await rest.post("/rest-api/call/startup", loopback_call(callee, "c1", "cs1")))[0] == 200
    await rest.wait_status("c1", {"ESTABLISHED"})
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "cs1", "rtmpUrl": url})
    assert code == 200, relay
    answers = [repr(relay)]
    found = await _relay_status(rest, "rtmp_cs1", {"PUBLISHING"})
    assert found["rtmpUrl"] == f"rtmp://relayuser:***@127.0.0.1:{nginx_rtmp.port}/live", found
    # find by the URL as given (with the password) works, and still answers without it
    for body in ({"streamName": "rtmp_cs1"}, {"rtmpUrl": url}):
        code, relays = await rest.post("/rest-api/push/find", body)
        assert code == 200 and relays[0]["mediaSessionId"] == relay["mediaSessionId"], (body, relays)
        answers.append(repr(relays))
    answers.append(repr((await rest.post("/rest-api/push/find_all"))[1]))
    code, dup = await rest.post("/rest-api/push/startup", {"streamName": "cs1", "rtmpUrl": url})
    assert code == 409, dup
    answers.append(repr(dup))
    # "SIP as RTMP" with the same URL: a second call pushing to the same target is a 409
    # whose message names the target, redacted.
    body = loopback_call(callee, "c2", "cs2", rtmpUrl=url, rtmpStream="cs2direct")
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    code, dup = await rest.post("/rest-api/call/startup", {**body, "callId": "c3", "toStream": "cs3"})
    assert code == 409 and "relayuser:***@" in dup["error"], dup
    answers.append(repr(dup))
    # the Call object of a SIP-as-RTMP call shows its rtmpUrl redacted
    code, calls = await rest.find_call("c2")
    assert code == 200 and calls[0]["rtmpUrl"] == f"rtmp://relayuser:***@127.0.0.1:{nginx_rtmp.port}/live"
    answers.append(repr(calls))
    await asyncio.sleep(3)
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": relay["mediaSessionId"]}))[0] == 200
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_cs1", 10)
    assert path is not None, nginx_rtmp.diagnostics()
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"] is not None and info["video"]["codec_name"] == "h264", info["streams"]
    assert float(info["format"]["duration"]) > 2, info["format"]

    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "relayuser:***@" in logs, logs[-2000:]  # the relay did log its target, redacted
    for where, text in (("REST answers", "\n".join(answers)), ("logs", logs),
                        ("nginx log", nginx_rtmp.log_text())):
        assert secret not in text, f"password leaked in {where}: {text[-2000:]}"
