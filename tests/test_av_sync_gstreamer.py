"""A/V sync from RTCP sender reports with a real RTP sender: GStreamer's rtpbin sends
H.264 (352x288, 25 fps) and PCMU from an MP4 of flash/beep material (a white frame and a
1 kHz beep at the same instant every 2 s), with its own SRs, and puts the video on the
wire 150 ms after its capture time (udpsink ts-offset; RTP timestamps and SRs stay
truthful).  sipp answers as bob through Kamailio with an SDP that advertises ports of
its own and sends nothing; GStreamer sends to the ports of sipstream's offer.

With SRs the recording (fMP4) shows flash and beep together; the control, the same
sender with no RTCP at all, shows the 150 ms: the delay is real, and the first test
passes because sipstream maps both tracks through GStreamer's SRs (rust/src/sync.rs).
GStreamer starts on the INVITE and sends before bob answers, so the recording starts
with its first keyframe, before its first SR: the video is timed by arrival until that
SR, whose 150 ms correction sipstream then slews in (10 % of media time, about 1.5 s).
The sync is judged on the pairs after that, where the video clock runs at 1/25 s again."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sipstream._core import SessionDescription

from .peers import avcheck
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.fixtures import require, started_peers
from .peers.gstreamer import GstRtpSender, gstreamer_available
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.sipp import sip_body
from .test_peers_rtmp_smoke import require_ffmpeg
from .test_recording import _finished_files, _recording_status
from .test_sip_kamailio import alice_call

pytestmark = pytest.mark.peers

WIDTH, HEIGHT, FPS = SOURCE_WIDTH, SOURCE_HEIGHT, SOURCE_FPS  # never the placeholder generator's
MEDIA_S = 40          # the MP4 outlasts the call: GStreamer plays it once
PERIOD_S = 2.0        # one flash + beep every 2 s
TONE_HZ = 1000.0
VIDEO_DELAY_MS = 150
RECORD_S = 12.0
# bob answers this long after the INVITE: GStreamer, started on the INVITE, is sending
# by then, so no track waits for RTP long enough to be filled with generated frames
ANSWER_DELAY_MS = 3000
# GStreamer's RTCP interval: its first SRs come 0.25 to 0.75 s after it starts (with its
# 5 s default, 1.25 to 3.75 s), so the SR's correction is absorbed early in the recording
RTCP_INTERVAL_MS = 1000


@pytest.fixture(scope="session")
def flash_beep_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gst_media") / f"flash_beep_{WIDTH}x{HEIGHT}.mp4"
    avcheck.write_flash_beep_media(path, seconds=MEDIA_S, width=WIDTH, height=HEIGHT, fps=FPS,
                                   period_s=PERIOD_S, freq=TONE_HZ)
    return path


@pytest.fixture
def gst_sender_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """make(**GstRtpSender kwargs) -> a started sender; all stopped in teardown, their
    command lines and logs printed when the test failed."""
    require(gstreamer_available())
    with started_peers(request, "gst-launch") as made:
        def make(media_file: Path, **kw: Any) -> GstRtpSender:
            sender = GstRtpSender(media_file, workdir=tmp_path / f"gst_{len(made)}", **kw)
            made.append(sender)
            return sender.start()

        yield make


def offered_media(invite: str) -> dict[str, tuple[str, int, dict[str, int]]]:
    """kind -> (address, RTP port, {codec name: payload type}) of the SDP offer in an INVITE."""
    offer = SessionDescription.parse(sip_body(invite))
    return {m.kind: (m.connection or offer.connection, m.port, {c.name: c.payload_type for c in m.codecs})
            for m in offer.media}


async def wait_invite(bob: Any, timeout: float = 20.0) -> str:
    """The INVITE bob received (bounded wait on sipp's message log)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (invites := bob.received_messages("INVITE")):
        assert loop.time() < deadline, f"bob received no INVITE in {timeout} s:\n{bob.diagnostics()[-3000:]}"
        await asyncio.sleep(0.05)
    return invites[0]


def decoded_video(path: Path) -> tuple[set[tuple[int, int]], list[float]]:
    """(sizes of every decoded picture, their times in decoding order, in media seconds)."""
    import av

    sizes, times = set(), []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            sizes.add((frame.width, frame.height))
            times.append(float(frame.time))
    return sizes, times


def clock_slew(times: list[float], fps: float = FPS, tolerance_s: float = 0.001) -> tuple[float, float]:
    """(time of the last picture not 1/fps after the one before it, 0.0 if none; the
    time taken out between pictures, in ms).  Before its first SR a track is timed by
    arrival; the SR's correction (here the 150 ms) is then slewed in at 10 % of media
    time (rust/src/sync.rs): pictures come closer together until it is absorbed."""
    last, absorbed = 0.0, 0.0
    for before, t in pairwise(times):
        if abs((t - before) - 1 / fps) > tolerance_s:
            last = t
            absorbed += (1 / fps - (t - before)) * 1000
    return last, absorbed


@pytest.mark.parametrize("sender_reports", [True, False], ids=["with-gstreamer-sr", "no-rtcp"])
async def test_gstreamer_sender_reports_put_late_video_back_in_sync(
        server_with: Any, tmp_path: Path, kamailio: Any, sipp_uas_factory: Any, gst_sender_factory: Any,
        flash_beep_mp4: Path, sender_reports: bool) -> None:
    require_ffmpeg()
    call_id, stream = ("g1", "gs1") if sender_reports else ("g2", "gs2")
    # bob's SDP answer advertises ports where the test's sinks listen; sipp sends nothing
    bob = sipp_uas_factory("uas_answer", media="sink", answer_delay_ms=ANSWER_DELAY_MS,
                           bye_timeout_s=RECORD_S + 60)
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path / "records"))
    code, body = await rest.post("/rest-api/call/startup", alice_call(kamailio, call_id, stream))
    assert code == 200, body

    offer = offered_media(await wait_invite(bob))
    a_host, a_port, a_codecs = offer["audio"]
    v_host, v_port, v_codecs = offer["video"]
    assert "PCMU" in a_codecs and "H264" in v_codecs, offer
    sender = gst_sender_factory(flash_beep_mp4, audio=(a_host, a_port), video=(v_host, v_port),
                                audio_pt=a_codecs["PCMU"], video_pt=v_codecs["H264"],
                                video_delay_ms=VIDEO_DELAY_MS, rtcp=sender_reports,
                                rtcp_interval_ms=RTCP_INTERVAL_MS)

    call = await rest.wait_status(call_id, {"ESTABLISHED"}, timeout=30)
    assert call["sipStatus"] == 200 and call["callee"] == "bob"
    recording = await _recording_status(server, stream, {"RECORDING"})
    await asyncio.sleep(RECORD_S)   # the media being recorded
    assert sender.poll() is None, f"GStreamer stopped sending during the call:\n{sender.diagnostics()}"
    stats = (await rest.find_call(call_id))[1][0]["stats"]
    assert (await rest.post("/rest-api/call/terminate", {"callId": call_id}))[0] == 200
    files = await _finished_files(recording)
    await rest.wait_status(call_id, {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    sender.stop()

    audio, video = stats["audio"], stats["video"]
    print(f"STATS sender_reports={sender_reports}: audio", audio, "video", video)
    # the far end's real media: GStreamer's packets in the codecs of the offer, nothing generated
    assert audio["codec"] == "PCMU" and video["codec"] == "H264", stats
    assert audio["packets"] > 0 and video["packets"] > 0 and video["keyframes"] > 0, stats
    assert audio["generated_frames"] == 0 and video["generated_frames"] == 0, stats
    if sender_reports:
        assert audio["sender_reports"] > 0 and video["sender_reports"] > 0, stats
    else:
        assert audio["sender_reports"] == 0 and video["sender_reports"] == 0, stats

    assert len(files) == 1, files
    info = await asyncio.to_thread(avcheck.probe, str(files[0]))
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
    sizes, times = await asyncio.to_thread(decoded_video, files[0])
    assert sizes == {(WIDTH, HEIGHT)}, sizes      # every picture is GStreamer's, none a placeholder
    assert all(b < a for b, a in pairwise(times)), "video timestamps not increasing"
    span = times[-1] - times[0]
    settled, absorbed = clock_slew(times)
    print(f"RECORDED VIDEO: {len(times)} pictures of {sizes} over {span:.2f} s of media time, "
          f"clock slewed by {absorbed:.1f} ms until {settled:.2f} s")
    assert span >= RECORD_S - 1 and len(times) / span >= 20, (len(times), span)

    sync = await asyncio.to_thread(avcheck.measure_av_sync, str(files[0]), FPS, TONE_HZ, PERIOD_S)
    print(f"AV SYNC gstreamer sender_reports={sender_reports}:",
          {k: sync[k] for k in ("pairs", "pair_times_s", "offsets_ms", "mean_ms", "max_abs_ms",
                                "unpaired_flashes", "unpaired_beeps")})
    # the pairs once the video clock runs at the source's rate: with SRs, after their
    # correction is absorbed (the recording starts with GStreamer's first keyframe, sent
    # before bob's answer, before the first SR); without SRs, all of them
    offsets = [o for t, o in zip(sync["pair_times_s"], sync["offsets_ms"], strict=True) if t > settled]
    assert len(offsets) >= 4, (settled, sync)
    if sender_reports:
        assert max(abs(o) for o in offsets) <= 20, (settled, sync)
    else:
        # the control: arrival times alone leave the video 150 ms late (beep - flash < 0)
        assert settled == 0.0, settled
        assert all(abs(o + VIDEO_DELAY_MS) < 30 for o in offsets), sync
