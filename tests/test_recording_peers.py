"""Recording with real peers (issue 6): a call answered by sipp through
Kamailio recorded by ``sip_record_stream`` and checked in the file (codecs,
duration, clean decode, A/V start and flash/beep sync); a disk that fills up
mid-recording (a 300 KiB tmpfs): the recording fails with a clear info and
the call goes on; and ``/recorder/startup`` by ``streamName`` with 2 s
rotation on a sipp call: every file plays and starts with a keyframe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from sipstream.testing import LoopbackCallee

from .conftest import loopback_call
from .peers import avcheck
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.fixtures import require
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.sipp import flash_beep_media
from .test_peers_rtmp_smoke import require_ffmpeg
from .test_recording import _finished_files, _recording_status, _stream
from .test_sip_kamailio import alice_call

pytestmark = pytest.mark.peers

MEDIA_S = 40          # sipp's flash/beep pcaps: longer than any call here, played once
RECORD_S = 20.0
PERIOD_S = 2.0        # media.make_flash_beep_pcaps: one white frame + 1 kHz beep every 2 s
TONE_HZ = 1000.0
FPS = 25


async def _sipp_call(rest: Any, kamailio: Any, sipp_uas_factory: Any, call_id: str, stream: str) -> Any:
    """bob (sipp, registered at Kamailio) answers alice's call and sends the flash/beep pcaps."""
    audio_pcap, video_pcap = await asyncio.to_thread(flash_beep_media, MEDIA_S)
    bob = sipp_uas_factory("uas_answer", audio_pcap=audio_pcap, video_pcap=video_pcap,
                           bye_timeout_s=120, loop_media=False)
    code, body = await rest.post("/rest-api/call/startup", alice_call(kamailio, call_id, stream))
    assert code == 200, body
    call = await rest.wait_status(call_id, {"ESTABLISHED"}, timeout=20)
    assert call["callee"] == "bob" and call["sipStatus"] == 200, call
    return bob


async def _hang_up(rest: Any, bob: Any, call_id: str) -> None:
    assert (await rest.post("/rest-api/call/terminate", {"callId": call_id}))[0] == 200
    await rest.wait_status(call_id, {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("BYE")


def _first_video_packet(path: Path) -> tuple[bool, list[int], bool]:
    """(keyframe flag of the first video packet, NAL unit types in it, whether
    decoding the file's first packet alone gives a key frame)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packet = next(p for p in container.demux(stream) if p.size)
        data = bytes(packet)
        nal_types = []
        pos = 0
        while pos + 4 <= len(data):  # MP4 (AVCC): 4-byte length prefixes
            size = int.from_bytes(data[pos:pos + 4], "big")
            if size == 0 or pos + 4 + size > len(data):
                break
            nal_types.append(data[pos + 4] & 0x1F)
            pos += 4 + size
        frames = stream.codec_context.decode(packet) + stream.codec_context.decode(None)
        return packet.is_keyframe, nal_types, bool(frames) and frames[0].key_frame


def _decodable_video_s(path: Path) -> tuple[int, float]:
    """(video frames decoded, time of the last one): decoding goes on past
    broken packets, as a player would."""
    frames, last = 0, 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                decoded = stream.codec_context.decode(packet if packet.size else None)
            except av.error.FFmpegError:
                continue
            for frame in decoded:
                frames += 1
                if frame.time is not None:
                    last = max(last, frame.time)
    return frames, last


# ------------------------------------------------------------ 1. sipp call
async def test_sipp_call_recorded_by_setting_plays_in_sync(
    server_with: Any, kamailio: Any, sipp_uas_factory: Any, tmp_path: Path
) -> None:
    require_ffmpeg()
    records = tmp_path / "records"
    server, rest = await server_with(sip_record_stream=True, record_dir=str(records))
    bob = await _sipp_call(rest, kamailio, sipp_uas_factory, "rp1", "recp1")
    recording = await _recording_status(server, "recp1", {"RECORDING"})
    started = time.monotonic()
    stream = await _stream(rest, "recp1")
    assert stream["record"] is True and stream["recordName"].startswith("recp1-"), stream
    assert stream["audioCodec"] == "PCMU", stream
    await asyncio.sleep(RECORD_S)
    assert recording.status == "RECORDING", recording.to_json()
    await _hang_up(rest, bob, "rp1")
    recorded_s = time.monotonic() - started
    files = await _finished_files(recording)
    assert recording.status == "STOPPED", recording.to_json()
    assert len(files) == 1 and files[0].parent == records, files
    path = str(files[0])

    info = await asyncio.to_thread(avcheck.probe, path)
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
    assert (info["video"]["width"], info["video"]["height"]) == (SOURCE_WIDTH, SOURCE_HEIGHT)
    duration = float(info["format"]["duration"])
    errors = await asyncio.to_thread(avcheck.decode_errors, path)
    start_offset = await asyncio.to_thread(avcheck.av_start_offset_ms, path)
    sync = await asyncio.to_thread(avcheck.measure_av_sync, path, FPS, TONE_HZ, PERIOD_S)
    summary = (f"recorded {recorded_s:.2f} s, file {duration:.2f} s, start offset {start_offset:+.1f} ms, "
               f"pairs {sync['pairs']} (unpaired flashes {sync['unpaired_flashes']}, beeps "
               f"{sync['unpaired_beeps']}), mean {sync['mean_ms']} ms, max |offset| {sync['max_abs_ms']} ms, "
               f"drift {sync['drift_ms_per_min']:+.1f} ms/min, offsets {sync['offsets_ms']}")
    print("SIPP RECORD:", summary)
    # at least the time waited (less the first keyframe), at most the time that passed
    assert RECORD_S - 1.0 <= duration <= recorded_s + 0.5, summary
    assert errors == "", f"decode errors: {errors[:2000]}"
    assert abs(start_offset) <= 40, summary
    # 20 s at one flash per 2 s: ~10 pairs; one may be cut at either end.
    assert sync["pairs"] >= int(RECORD_S / PERIOD_S) - 2, summary
    assert sync["max_abs_ms"] <= 40, summary


# ------------------------------------------------------------ 2. disk full
@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs, unmounted (lazily) at teardown."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        require(f"cannot mount a tmpfs (needs root): {exc}")
    if res.returncode != 0:
        require(f"cannot mount a tmpfs (needs root; exit {res.returncode}): {(res.stderr or res.stdout).strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def _open_files_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


async def test_disk_full_fails_the_recording_and_the_call_goes_on(
    server_with: Any, callee: LoopbackCallee, small_tmpfs: Path
) -> None:
    require_ffmpeg()
    server, rest = await server_with(sip_record_stream=True, record_dir=str(small_tmpfs))
    await rest.start_call(loopback_call(callee, "df1", "recdf1"))
    await _recording_status(server, "recdf1", {"RECORDING"})
    started = time.monotonic()
    recording = await _recording_status(server, "recdf1", {"FAILED", "STOPPED"}, timeout=40)
    failed_after = time.monotonic() - started
    print(f"DISK FULL: {recording.status} after {failed_after:.2f} s: {recording.info}")
    assert recording.status == "FAILED", recording.to_json()
    assert "no space" in recording.info.lower(), recording.info
    assert str(small_tmpfs) in recording.info, recording.info
    await asyncio.wait_for(recording.wait(), 5)
    assert not recording.active

    # the call goes on, unrecorded
    before = (await _stream(rest, "recdf1"))["stats"]["videoFrames"]
    await asyncio.sleep(1.5)
    stream = await _stream(rest, "recdf1")
    assert stream["stats"]["videoFrames"] > before + 20, (before, stream["stats"])
    assert stream["record"] is False, stream
    assert (await rest.find_call("df1"))[1][0]["status"] == "ESTABLISHED"
    code, _ = await rest.post("/rest-api/recorder/find_all")
    assert code == 404

    # nothing left behind: no writer thread, no open file on the full disk
    threads: list[str] = []
    for _ in range(40):
        threads = [t.name for t in threading.enumerate() if t.name.startswith("rec-recdf1")]
        if not threads:
            break
        await asyncio.sleep(0.05)
    assert threads == [], threads
    assert _open_files_under(small_tmpfs) == []

    # what was written before the disk filled up
    files = sorted(small_tmpfs.iterdir())
    assert len(files) == 1, files
    partial = files[0]
    assert recording.files == [partial], (recording.files, files)
    size = partial.stat().st_size
    assert size > 100_000, size
    info = await asyncio.to_thread(avcheck.probe, str(partial))
    errors = await asyncio.to_thread(avcheck.decode_errors, str(partial))
    duration = float(info["format"]["duration"] or 0)
    frames, last_s = await asyncio.to_thread(_decodable_video_s, partial)
    print(f"DISK FULL: partial file {partial.name} {size} bytes, duration {duration:.2f} s, "
          f"{frames} video frames decode up to {last_s:.2f} s, decode errors: {errors.strip()[:600]!r}")
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
    # the fragment cut off by the full disk was truncated away: what is left plays cleanly
    assert errors == "", errors
    # Fragments of 1 s: all but the one being written when the disk filled up play.
    assert last_s >= failed_after - 2.0, (last_s, failed_after)
    assert frames >= (failed_after - 2.0) * 25 * 0.9, (frames, failed_after)
    await rest.post("/rest-api/call/terminate", {"callId": "df1"})


# ------------------------------------------------------------ 3. rotation
async def test_recorder_startup_by_stream_name_rotates_into_files_that_each_play(
    server_with: Any, kamailio: Any, sipp_uas_factory: Any, tmp_path: Path
) -> None:
    require_ffmpeg()
    records = tmp_path / "records"
    server, rest = await server_with(record_dir=str(records))
    bob = await _sipp_call(rest, kamailio, sipp_uas_factory, "rp3", "recp3")
    assert (await _stream(rest, "recp3"))["record"] is False
    code, body = await rest.post("/rest-api/recorder/startup", {"streamName": "recp3",
                                                                "config": {"rotation": "2s"}})
    assert code == 200, body
    recording = await _recording_status(server, "recp3", {"RECORDING"})
    await asyncio.sleep(8.0)
    code, listed = await rest.post("/rest-api/recorder/find_all")
    assert code == 200 and [r["streamName"] for r in listed] == ["recp3"], listed
    code, body = await rest.post("/rest-api/recorder/terminate", {"streamName": "recp3"})
    assert code == 200, body
    files = list(recording.files)
    await _hang_up(rest, bob, "rp3")
    assert recording.status == "STOPPED", recording.to_json()
    assert len(files) >= 3, [f.name for f in files]
    assert sorted(records.iterdir()) == sorted(files)
    durations = []
    for path in files:
        info = await asyncio.to_thread(avcheck.probe, str(path))
        assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac", info["streams"]
        durations.append(float(info["format"]["duration"]))
        errors = await asyncio.to_thread(avcheck.decode_errors, str(path))
        assert errors == "", f"{path.name}: {errors[:2000]}"
        flag, nal_types, decoded_key = await asyncio.to_thread(_first_video_packet, path)
        assert flag and 5 in nal_types and decoded_key, (path.name, flag, nal_types, decoded_key)
    print("ROTATION:", [(f.name, round(d, 2)) for f, d in zip(files, durations, strict=True)])
    # A file ends at the first keyframe once 2 s are written; sipp ignores keyframe requests and
    # its pcap has one every second, so 2..3 s (the keyframe at 2.0 s may still go into the file).
    assert all(1.5 <= d <= 3.6 for d in durations[:-1]), durations
    assert abs(sum(durations) - 8.0) < 1.5, durations
