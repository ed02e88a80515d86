"""One call answered by sipp through Kamailio, played at the same time by
every player of the ports that are not WebRTC (issue 13's "done when"):
ffprobe, ffmpeg and Chromium over LL-HLS, ffmpeg and GStreamer over RTSP.
The far end sends flash/beep material (a white frame and a 1 kHz beep
together every 2 s), so what ffmpeg copied is checked for a clean decode,
the far end's picture and beep, and audio and video still together."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import free_tcp_port, wait_until
from .media_checks import dominant_hz
from .peers import avcheck
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.fixtures import require_chromium
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.players import chromium_plays_hls, ffmpeg_copy, gstreamer_rtsp_decode
from .peers.sipp import flash_beep_media
from .test_rtsp import require_players
from .test_sip_kamailio import alice_call

pytestmark = pytest.mark.peers

MEDIA_S = 70          # sipp's pcaps: longer than the call, played once
RECORD_S = 12.0       # what each ffmpeg copies
PERIOD_S = 2.0        # one flash + beep every 2 s
TONE_HZ = 1000.0


def _check_recording(path: Path, audio_codec: str) -> str:
    """The far end's picture and beep, decoded clean, in sync; a summary line."""
    info = avcheck.probe(str(path))
    assert info["video"]["codec_name"] == "h264", info["streams"]
    assert (info["video"]["width"], info["video"]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    assert info["audio"]["codec_name"] == audio_codec, info["streams"]
    assert avcheck.decode_errors(str(path)) == ""
    sync = avcheck.measure_av_sync(str(path), SOURCE_FPS, TONE_HZ, PERIOD_S)
    summary = (f"{path.name}: pairs {sync['pairs']}, offsets {sync['offsets_ms']} ms, "
               f"unpaired flashes {sync['unpaired_flashes']}, beeps {sync['unpaired_beeps']}")
    # ~6 pairs in 12 s; the first and last may be cut by the start (a keyframe) or the end
    assert sync["pairs"] >= int(RECORD_S / PERIOD_S) - 2, summary
    assert sync["max_abs_ms"] <= 100, summary
    return summary


async def test_one_sipp_call_plays_over_hls_and_rtsp_in_every_player(
    server_with: Any, kamailio: Any, sipp_uas_factory: Any, tmp_path: Path
) -> None:
    require_players()
    require_chromium()
    server, rest = await server_with(hls_port=free_tcp_port(), rtsp_port=free_tcp_port())
    audio_pcap, video_pcap = await asyncio.to_thread(flash_beep_media, MEDIA_S)
    sipp_uas_factory("uas_answer", audio_pcap=audio_pcap, video_pcap=video_pcap, bye_timeout_s=MEDIA_S + 30,
                     loop_media=False)
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio, "pb1", "pbs1")))[0] == 200
    await rest.wait_status("pb1", {"ESTABLISHED"}, timeout=20)
    stream = server.gateway.streams["pbs1"]
    await wait_until(lambda: stream.feed.stats()["keyframes"] > 0, 15, "a keyframe from sipp")
    assert server.hls is not None and server.rtsp is not None
    hls_url = f"http://127.0.0.1:{server.hls.port}/pbs1/pbs1.m3u8"
    rtsp_url = f"rtsp://127.0.0.1:{server.rtsp.port}/pbs1"

    # ffmpeg over both ports at once, while ffprobe reads the playlist
    hls_file, rtsp_file = tmp_path / "hls.mp4", tmp_path / "rtsp.mkv"
    copies = asyncio.gather(ffmpeg_copy(hls_url, hls_file, RECORD_S),
                            ffmpeg_copy(rtsp_url, rtsp_file, RECORD_S, "-rtsp_transport", "tcp", audio="pcm_s16le"))
    probed = await asyncio.to_thread(avcheck.probe, hls_url)
    assert probed["video"]["codec_name"] == "h264" and probed["audio"]["codec_name"] == "aac", probed["streams"]
    assert (probed["video"]["width"], probed["video"]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    await wait_until(lambda: stream.viewers >= 1, 10, "the RTSP viewer counted")
    await copies
    for path, codec in ((hls_file, "aac"), (rtsp_file, "pcm_s16le")):
        print("SIPP PLAYBACK AVSYNC", await asyncio.to_thread(_check_recording, path, codec))

    # then Chromium over HLS, GStreamer over RTSP
    first, later = await chromium_plays_hls(hls_url, server.base_url + "/health")
    assert later["error"] is None and (later["w"], later["h"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), later
    assert later["t"] - first["t"] >= 3.0, (first, later)
    count, pcm, log = await gstreamer_rtsp_decode(rtsp_url, "tcp", tmp_path, SOURCE_WIDTH, SOURCE_HEIGHT)
    assert count >= SOURCE_FPS * 2, (count, log[-2000:])
    # the beeps heard: 100 ms of 1 kHz every 2 s, in 4 s of what GStreamer decoded
    assert len(pcm) >= 8000 * 3, len(pcm)
    loud = pcm[-8000 * 3:].astype(float) / 32768
    windows = loud[: len(loud) // 800 * 800].reshape(-1, 800)  # 100 ms windows
    beep = windows[int(np.argmax(np.sqrt((windows**2).mean(axis=1))))]
    assert abs(dominant_hz(beep, 8000) - TONE_HZ) < 30, dominant_hz(beep, 8000)

    assert (await rest.post("/rest-api/call/terminate", {"callId": "pb1"}))[0] == 200
    await rest.wait_status("pb1", {"FINISH"})
    # the call's end ends the RTSP viewers and the HLS stream (its playlist now says ENDLIST)
    muxer = server.hls.muxers["pbs1"]
    await wait_until(lambda: not server.whep.plain and muxer.ended, 10, "the players' ends")
