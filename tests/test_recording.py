"""Recording (SPEC.md §5, issue 6): files written by a live server are
checked with ffprobe/ffmpeg — codecs, duration, a clean decode, A/V start —
for G.711 (PCMU, PCMA), opus (as AAC and kept as opus) and audio-only calls;
rotation, templates, the hook script, an unwritable directory, ``kill -9``
mid-recording, and ``/stream/snapshot``."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import pytest
from sipstream.egress.recorder import RecordingError, Rotation, check_template, render_name
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, free_tcp_port, loopback_call
from .peers import avcheck
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH
from .test_cli import SIPSTREAM, _get, _wait_http
from .test_peers_rtmp_smoke import require_ffmpeg

pytestmark = pytest.mark.peers


async def _stream(rest: Rest, name: str) -> dict[str, Any]:
    code, streams = await rest.post("/rest-api/stream/find", {"name": name})
    assert code == 200, streams
    return streams[0]


async def _recording_status(server: Server, stream: str, statuses: set[str], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    recording = None
    while time.monotonic() < deadline:
        live = server.gateway.streams.get(stream)
        recording = live.recording if live is not None else None
        if recording is not None and recording.status in statuses:
            return recording
        await asyncio.sleep(0.05)
    raise AssertionError(f"recording of {stream} never reached {statuses}: "
                         f"{recording.to_json() if recording else None}")


async def _finished_files(recording: Any, timeout: float = 15) -> list[Path]:
    await asyncio.wait_for(recording.wait(), timeout)
    assert recording.files, recording.to_json()
    return recording.files


def _check_file(path: Path, audio: str | None = "aac", video: bool = True,
                size: tuple[int, int] = (SOURCE_WIDTH, SOURCE_HEIGHT)) -> dict[str, Any]:
    """ffprobe codecs and picture size, a clean decode, and aligned starts; the probe."""
    info = avcheck.probe(str(path))
    if video:
        assert info["video"]["codec_name"] == "h264", info
        assert (info["video"]["width"], info["video"]["height"]) == size
    else:
        assert info.get("video") is None, info
    if audio is not None:
        assert info["audio"]["codec_name"] == audio, info
    else:
        assert info.get("audio") is None, info
    assert avcheck.decode_errors(str(path)) == ""
    if video and audio is not None:
        offset = avcheck.av_start_offset_ms(str(path))
        print(f"RECORD {path.name}: A/V start offset {offset:.1f} ms")
        assert abs(offset) <= 40, f"{path.name}: audio/video start {offset:.1f} ms apart"
    return info


# -------------------------------------------------------------------- units
def test_rotation_and_template_rules() -> None:
    assert Rotation.parse("") == Rotation() and not Rotation.parse("disabled").enabled
    assert Rotation.parse("20M") == Rotation(size=20 * 1024 * 1024)
    assert Rotation.parse("500K").size == 500 * 1024
    assert Rotation.parse("30").seconds == 30 and Rotation.parse("5min").seconds == 300
    assert Rotation.parse("2s").seconds == 2 and Rotation.parse("1h").seconds == 3600
    for bad in ("abc", "-5", "1K", "0.1s", "12 parsecs"):
        with pytest.raises(RecordingError):
            Rotation.parse(bad)
    with pytest.raises(RecordingError, match="unknown field"):
        check_template("{streamName}-{nope}")
    fields = {"streamName": "../../etc/passwd", "startTimeMillis": "17"}
    name = render_name("../{streamName}/x-{startTimeMillis}-{endTime}", fields)
    assert "/" not in name and not name.startswith(".")
    assert name.endswith("-17-{endTime}")


def _assert_duration(duration: float, recorded_at_least_s: float, elapsed_s: float) -> None:
    """A file holds the media of the time it was recorded: at least the time
    the test waited (less a second: the first keyframe, the last fragment),
    and no more than the wall-clock time that passed (however slow the machine)."""
    assert recorded_at_least_s - 1.0 <= duration <= elapsed_s + 0.5, (duration, recorded_at_least_s, elapsed_s)


# ------------------------------------------------------------- recordings
async def test_sip_record_stream_records_the_call_to_an_mp4_that_plays(
    server_with: Any, callee: LoopbackCallee, tmp_path: Path
) -> None:
    require_ffmpeg()
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path))
    await rest.start_call(loopback_call(callee, "rec1", "recs1"))
    recording = await _recording_status(server, "recs1", {"RECORDING"})
    started = time.monotonic()
    stream = await _stream(rest, "recs1")
    assert stream["record"] is True
    assert stream["recordName"].startswith("recs1-") and stream["recordName"].endswith(".mp4")
    code, listed = await rest.post("/rest-api/recorder/find_all")
    assert code == 200 and listed[0]["fileName"] == stream["recordName"]
    assert listed[0]["mediaSessionId"] == stream["mediaSessionId"]
    await asyncio.sleep(6)
    assert (await rest.post("/rest-api/call/terminate", {"callId": "rec1"}))[0] == 200
    files = await _finished_files(recording)
    recorded_s = time.monotonic() - started
    assert len(files) == 1 and files[0].parent == tmp_path
    info = await asyncio.to_thread(_check_file, files[0])
    duration = float(info["format"]["duration"])
    print(f"RECORD duration {duration:.2f} s for {recorded_s:.2f} s recorded")
    _assert_duration(duration, 6, recorded_s)
    assert (await rest.post("/rest-api/recorder/find_all"))[0] == 404


@pytest.mark.parametrize("codecs, keep_opus, audio", [
    ("alaw,telephone-event,h264", False, "aac"),
    ("opus,telephone-event,h264", False, "aac"),
    ("opus,telephone-event,h264", True, "opus"),
])
async def test_pcma_and_opus_calls_are_recorded(server_with: Any, callee: LoopbackCallee, tmp_path: Path,
                                                codecs: str, keep_opus: bool, audio: str) -> None:
    require_ffmpeg()
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path), codecs=codecs,
                                     record_audio_codec="opus" if keep_opus else "aac")
    await rest.start_call(loopback_call(callee, "rec2", "recs2"))
    stream = await _stream(rest, "recs2")
    assert stream["audioCodec"] in ("PCMA", "opus")
    recording = await _recording_status(server, "recs2", {"RECORDING"})
    started = time.monotonic()
    await asyncio.sleep(4)
    await rest.post("/rest-api/call/terminate", {"callId": "rec2"})
    files = await _finished_files(recording)
    info = await asyncio.to_thread(_check_file, files[0], audio)
    _assert_duration(float(info["format"]["duration"]), 4, time.monotonic() - started)


async def test_audio_only_call_is_recorded_with_a_generated_black_picture(
    server_with: Any, callee: LoopbackCallee, tmp_path: Path
) -> None:
    require_ffmpeg()
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path))
    await rest.start_call(loopback_call(callee, "rec3", "recs3", hasVideo="false"))
    recording = await _recording_status(server, "recs3", {"RECORDING"})
    started = time.monotonic()
    await asyncio.sleep(4)
    await rest.post("/rest-api/call/terminate", {"callId": "rec3"})
    files = await _finished_files(recording)
    # H.264 (the generator's black 320x240 keyframe, one a second) + AAC
    info = await asyncio.to_thread(_check_file, files[0], "aac", True, (320, 240))
    # the audio's duration: the last black picture lasts a whole second
    _assert_duration(float(info["audio"]["duration"]), 4, time.monotonic() - started)
    assert abs(float(info["video"]["duration"]) - float(info["audio"]["duration"])) < 1.1


async def test_recorder_rest_on_demand_with_template_rotation_and_hook(
    server_with: Any, callee: LoopbackCallee, tmp_path: Path
) -> None:
    require_ffmpeg()
    hook_log = tmp_path / "hook.log"
    hook = tmp_path / "on_record.sh"
    hook.write_text(f'#!/bin/sh\necho "$1|$2" >> {hook_log}\n')
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    records = tmp_path / "records"
    server, rest = await server_with(record_dir=str(records), on_record_hook_script=str(hook))
    await rest.start_call(loopback_call(callee, "rec4", "recs4"))
    stream = await _stream(rest, "recs4")
    assert stream["record"] is False
    # contract errors first
    assert (await rest.post("/rest-api/recorder/startup", {"mediaSessionId": "nope"}))[0] == 404
    assert (await rest.post("/rest-api/recorder/startup", {}))[0] == 400
    code, body = await rest.post("/rest-api/recorder/startup", {
        "mediaSessionId": stream["mediaSessionId"], "config": {"fileTemplate": "{streamName}-{bogus}"}})
    assert code == 400 and "bogus" in body["error"]
    assert (await rest.post("/rest-api/recorder/terminate", {"mediaSessionId": "nope"}))[0] == 404

    template = "../{streamName}-{videoCodec}-{audioCodec}-{startTimeMillis}-{endTimeMillis}-{duration}"
    code, _ = await rest.post("/rest-api/recorder/startup", {
        "mediaSessionId": stream["mediaSessionId"], "config": {"fileTemplate": template, "rotation": "2s"}})
    assert code == 200
    recording = await _recording_status(server, "recs4", {"RECORDING"})
    name = (await _stream(rest, "recs4"))["recordName"]
    # While a file is written its end fields are not known yet: WCS lists it
    # with them as placeholders (its /recorder/find_all example in
    # shared/reference/wcs-api.md: "9c3e-test-1563776083752-{endTime}.mp4").
    # The finished files below have them filled in.
    assert name.startswith("_recs4-H264-AAC-") and name.endswith("-{endTimeMillis}-{duration}.mp4")
    await asyncio.sleep(7)
    assert (await rest.post("/rest-api/recorder/terminate", {"mediaSessionId": stream["mediaSessionId"]}))[0] == 200
    files = recording.files
    assert len(files) >= 3, [f.name for f in files]
    assert {f.parent for f in files} == {records}
    assert set(os.listdir(records)) == {f.name for f in files}
    for path in files:
        _, _, _, start_ms, end_ms, duration_ms = path.stem.rsplit("-", 5)
        assert int(end_ms) - int(start_ms) == pytest.approx(int(duration_ms), abs=2)
        info = await asyncio.to_thread(_check_file, path)
        assert 0.5 < float(info["format"]["duration"]) < 4.0, (path.name, info["format"]["duration"])
    # the call went on
    assert (await rest.find_call("rec4"))[1][0]["status"] == "ESTABLISHED"
    for _ in range(50):
        if hook_log.exists() and len(hook_log.read_text().splitlines()) == len(files):
            break
        await asyncio.sleep(0.1)
    assert sorted(hook_log.read_text().splitlines()) == sorted(f"recs4|{f}" for f in files)


async def test_startup_on_a_recording_stream_restarts_it(server_with: Any, callee: LoopbackCallee,
                                                         tmp_path: Path) -> None:
    require_ffmpeg()
    server, rest = await server_with(record_dir=str(tmp_path))
    await rest.start_call(loopback_call(callee, "rec5", "recs5"))
    assert (await rest.post("/rest-api/recorder/startup", {"streamName": "recs5",
                                                           "config": {"fileTemplate": "first"}}))[0] == 200
    first = await _recording_status(server, "recs5", {"RECORDING"})
    await asyncio.sleep(2)
    assert (await rest.post("/rest-api/recorder/startup", {"streamName": "recs5",
                                                           "config": {"fileTemplate": "second"}}))[0] == 200
    assert [f.name for f in first.files] == ["first.mp4"]
    second = await _recording_status(server, "recs5", {"RECORDING"})
    assert second is not first
    await asyncio.sleep(2)
    await rest.post("/rest-api/call/terminate", {"callId": "rec5"})
    assert [f.name for f in await _finished_files(second)] == ["second.mp4"]
    for path in (tmp_path / "first.mp4", tmp_path / "second.mp4"):
        await asyncio.to_thread(_check_file, path)


async def test_unwritable_record_dir_fails_the_recording_not_the_call(
    server_with: Any, callee: LoopbackCallee, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server, rest = await server_with(sip_record_stream=True, record_dir=str(blocker / "records"))
    await rest.start_call(loopback_call(callee, "rec6", "recs6"))
    recording = await _recording_status(server, "recs6", {"FAILED"})
    assert "records" in recording.info and "Not a directory" in recording.info, recording.info
    frames = (await _stream(rest, "recs6"))["stats"]["videoFrames"]
    await asyncio.sleep(1)
    stream = await _stream(rest, "recs6")
    assert stream["stats"]["videoFrames"] > frames and stream["record"] is False
    assert (await rest.find_call("rec6"))[1][0]["status"] == "ESTABLISHED"


async def test_snapshot_is_a_png_of_the_stream(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    assert (await rest.post("/rest-api/stream/snapshot", {"streamName": "nope"}))[0] == 404
    assert (await rest.post("/rest-api/stream/snapshot", {}))[0] == 400
    await rest.start_call(loopback_call(callee, "rec7", "recs7"))
    await asyncio.sleep(1)
    code, body = await rest.post("/rest-api/stream/snapshot", {"streamName": "recs7"})
    assert code == 200, body
    png = base64.b64decode(body["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with av.open(io.BytesIO(png), format="png_pipe") as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    # the test pattern is not a flat picture
    assert frame.to_ndarray(format="gray").std() > 10


def test_kill_9_mid_recording_leaves_a_file_that_plays(tmp_path: Path) -> None:
    """The server is killed with SIGKILL while recording: the fragmented MP4
    on disk plays, and lacks at most the last 2 s before the kill."""
    require_ffmpeg()
    port = free_tcp_port()
    records = tmp_path / "records"
    env = {**os.environ, "SIPSTREAM_MEDIA_PORT_FROM": "45200", "SIPSTREAM_MEDIA_PORT_TO": "45299",
           "SIPSTREAM_WEBRTC_PORT": "0", "SIPSTREAM_WS_PORT": "0", "SIPSTREAM_HLS_PORT": "0",
           "SIPSTREAM_RTSP_PORT": "0",
           "SIPSTREAM_SIP_RECORD_STREAM": "true", "SIPSTREAM_RECORD_DIR": str(records)}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([SIPSTREAM, "serve", "--http-port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    loop = asyncio.new_event_loop()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2.0)
    try:
        loop.run_until_complete(callee.start())
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", proc)
        assert _get(f"{base}/rest-api/call/startup", loopback_call(callee, "k9", "kill9"))[0] == 200

        def recording() -> bool:
            code, streams = loop.run_until_complete(asyncio.to_thread(_get, f"{base}/rest-api/stream/find",
                                                                      {"name": "kill9"}))
            return code == 200 and streams[0]["record"] is True

        deadline = time.monotonic() + 15
        while not recording():
            assert time.monotonic() < deadline, "never started recording"
            loop.run_until_complete(asyncio.sleep(0.1))
        started = time.monotonic()
        loop.run_until_complete(asyncio.sleep(6))
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        loop.run_until_complete(callee.stop())
        loop.close()
        log.close()
    files = list(records.iterdir())
    assert len(files) == 1, files
    info = _check_file(files[0])
    duration = float(info["format"]["duration"])
    print(f"KILL9 recorded {killed - started:.2f} s before SIGKILL, {duration:.2f} s playable")
    assert duration >= (killed - started) - 2.0, (duration, killed - started)


async def test_recording_keeps_audio_and_video_in_sync(server_with: Any, tmp_path: Path) -> None:
    """White flash and 1 kHz beep leave the callee together every 2 s; in
    the recorded file they must still meet within 40 ms."""
    require_ffmpeg()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, loop_seconds=2, sync_marks=True)
    await callee.start()
    try:
        server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path))
        await rest.start_call(loopback_call(callee, "rec8", "recs8"))
        recording = await _recording_status(server, "recs8", {"RECORDING"})
        await asyncio.sleep(14)
        await rest.post("/rest-api/call/terminate", {"callId": "rec8"})
        files = await _finished_files(recording)
    finally:
        await callee.stop()
    sync = await asyncio.to_thread(avcheck.measure_av_sync, str(files[0]), 25, 1000.0, 2.0)
    print("RECORD AVSYNC", {k: sync[k] for k in ("pairs", "mean_ms", "max_abs_ms", "drift_ms_per_min")})
    assert sync["pairs"] >= 6, sync
    assert sync["max_abs_ms"] <= 40, sync


async def test_rotation_by_size(server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    require_ffmpeg()
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path), record_rotation="64K")
    await rest.start_call(loopback_call(callee, "rec9", "recs9"))
    recording = await _recording_status(server, "recs9", {"RECORDING"})
    await asyncio.sleep(6)
    await rest.post("/rest-api/call/terminate", {"callId": "rec9"})
    files = await _finished_files(recording)
    sizes = [f.stat().st_size for f in files]
    assert len(files) >= 2, sizes
    # cut at the first keyframe after 64 KiB: not much beyond it
    assert all(size >= 64 * 1024 for size in sizes[:-1]), sizes
    for path in files:
        await asyncio.to_thread(_check_file, path)


async def test_finished_recordings_are_forgotten(server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    """A server recording every call must not keep every recording it ever made."""
    server, rest = await server_with(sip_record_stream=True, record_dir=str(tmp_path))
    await rest.start_call(loopback_call(callee, "rec10", "recs10"))
    recording = await _recording_status(server, "recs10", {"RECORDING"})
    assert list(server.gateway.recorders.recordings.values()) == [recording]
    await asyncio.sleep(1)
    await rest.post("/rest-api/call/terminate", {"callId": "rec10"})
    await _finished_files(recording)
    await asyncio.sleep(0)
    assert server.gateway.recorders.recordings == {}
    assert (await _stream(rest, "recs10"))["recordName"] == recording.files[0].name
