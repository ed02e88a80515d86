"""A/V sync from RTCP sender reports (SPEC.md §4, issue 4): the callee
sends its video 150 ms after "capturing" it (its RTP time), as behind a slow
encoder, while flash and beep are captured together every 2 s. With sender
reports the media core maps both tracks onto one clock and the frames
handed to egress (here: a recording) meet within 20 ms of the source's
timing; without them only arrival times are left and the 150 ms show."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sipstream.testing import LoopbackCallee

from .conftest import loopback_call
from .peers import avcheck
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH
from .test_peers_rtmp_smoke import require_ffmpeg
from .test_recording import _finished_files, _recording_status

VIDEO_DELAY_MS = 150


@pytest.mark.parametrize("sender_reports", [True, False], ids=["with-sr", "arrival-only"])
async def test_sender_reports_put_late_video_back_in_sync(server_with: Any, tmp_path: Path,
                                                          sender_reports: bool) -> None:
    require_ffmpeg()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, sync_marks=True,
                            video_delay_ms=VIDEO_DELAY_MS, sender_reports=sender_reports)
    await callee.start()
    try:
        server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path))
        await rest.start_call(loopback_call(callee, "av1", "avs1"))
        recording = await _recording_status(server, "avs1", {"RECORDING"})
        await asyncio.sleep(9)
        stats = (await rest.find_call("av1"))[1][0]["stats"]
        await rest.post("/rest-api/call/terminate", {"callId": "av1"})
        files = await _finished_files(recording)
    finally:
        await callee.stop()
    sync = await asyncio.to_thread(avcheck.measure_av_sync, str(files[0]), 25, 1000.0, 2.0)
    print(f"AV SYNC sender_reports={sender_reports}:",
          {k: sync[k] for k in ("pairs", "mean_ms", "max_abs_ms", "drift_ms_per_min")})
    assert sync["pairs"] >= 3, sync
    if sender_reports:
        assert stats["video"]["sender_reports"] > 0 and stats["audio"]["sender_reports"] > 0, stats
        assert sync["max_abs_ms"] <= 20, sync
    else:
        # the control: the same media without reports is off by the video's delay
        assert abs(abs(sync["mean_ms"]) - VIDEO_DELAY_MS) < 30, sync
