"""HLS / LL-HLS playback (issue 13): a call's stream played over the HLS
port by real clients — ffmpeg (the far end's 352x288 moving picture and
440 Hz tone, decoded clean), Debian's Chromium natively in a <video> — and
its playlists held to RFC 8216bis: part and segment durations, media
sequence continuity, program date times, segments that start with an IDR,
blocking reloads that return with the part asked for, EXT-X-ENDLIST when
the call ends. Then what must be refused: unknown streams, bad delivery
directives, paths out of the stream, missing or wrong tokens, more streams
than ``hls_max_streams``; and what an idle player or a stop leaves behind."""

from __future__ import annotations

import asyncio
import datetime
import io
import re
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from sipstream.api.auth import playback_token
from sipstream.egress.cmaf import AudioTrack, Segmenter, VideoTrack, init_segment
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, free_tcp_port, loopback_call, wait_until
from .media_checks import MIN_FPS, dominant_hz
from .peers import avcheck
from .peers.fixtures import require_chromium
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.players import chromium_plays_hls, ffmpeg_copy
from .test_peers_rtmp_smoke import require_ffmpeg

pytestmark = pytest.mark.peers

TONE_HZ = 440.0


# ------------------------------------------------------------------ helpers
@dataclass
class Part:
    duration: float
    uri: str
    independent: bool


@dataclass
class Segment:
    msn: int
    uri: str
    duration: float
    date: datetime.datetime | None
    parts: list[Part]


@dataclass
class Playlist:
    text: str
    tags: dict[str, str] = field(default_factory=dict)  # first value of each tag
    media_sequence: int = 0
    segments: list[Segment] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)  # of the segment not complete yet
    hint: str | None = None
    endlist: bool = False

    def attrs(self, tag: str) -> dict[str, str]:
        return _attrs(self.tags[tag])

    @property
    def part_target(self) -> float:
        return float(self.attrs("EXT-X-PART-INF")["PART-TARGET"])

    @property
    def target_duration(self) -> int:
        return int(self.tags["EXT-X-TARGETDURATION"])


def _attrs(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def parse_playlist(text: str) -> Playlist:
    """A media playlist, line by line (RFC 8216bis §4)."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U", text
    playlist = Playlist(text)
    msn: int | None = None
    date = None
    duration = None
    parts: list[Part] = []
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#"):
            tag, _, value = line[1:].partition(":")
            playlist.tags.setdefault(tag, value)
            if tag == "EXT-X-MEDIA-SEQUENCE":
                msn = playlist.media_sequence = int(value)
            elif tag == "EXT-X-PROGRAM-DATE-TIME":
                date = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            elif tag == "EXTINF":
                duration = float(value.split(",")[0])
            elif tag == "EXT-X-PART":
                a = _attrs(value)
                parts.append(Part(float(a["DURATION"]), a["URI"], a.get("INDEPENDENT") == "YES"))
            elif tag == "EXT-X-PRELOAD-HINT":
                assert _attrs(value)["TYPE"] == "PART", line
                playlist.hint = _attrs(value)["URI"]
            elif tag == "EXT-X-ENDLIST":
                playlist.endlist = True
            continue
        assert msn is not None and duration is not None, f"a segment URI before its tags: {line}"
        playlist.segments.append(Segment(msn, line, duration, date, parts))
        msn, date, duration, parts = msn + 1, None, None, []
    playlist.parts = parts
    return playlist


class HlsClient:
    """GETs on the HLS port of ``server``."""

    def __init__(self, server: Server, http: aiohttp.ClientSession) -> None:
        assert server.hls is not None
        self.base = f"http://127.0.0.1:{server.hls.port}"
        self.http = http

    def url(self, stream: str, file: str | None = None) -> str:
        return f"{self.base}/{stream}/{file or stream + '.m3u8'}"

    async def get(self, url: str, **kwargs: Any) -> tuple[int, bytes, Any]:
        async with self.http.get(url, **kwargs) as res:
            return res.status, await res.read(), res.headers

    async def playlist(self, stream: str, query: str = "", timeout: float = 20) -> Playlist:
        status, body, headers = await asyncio.wait_for(self.get(self.url(stream) + query), timeout)
        assert status == 200, (status, body)
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl"), headers
        return parse_playlist(body.decode())

    async def media(self, stream: str, uri: str) -> bytes:
        status, body, headers = await self.get(urllib.parse.urljoin(self.url(stream), uri))
        assert status == 200, (uri, status, body)
        assert headers["Content-Type"] in ("video/mp4", "audio/mp4"), headers
        assert "immutable" in headers["Cache-Control"], headers
        return body


async def _hls_server(server_with: Any, callee: LoopbackCallee, stream: str, **settings: Any) -> tuple[
        Server, Rest, HlsClient]:
    server, rest = await server_with(hls_port=free_tcp_port(), **settings)
    await rest.start_call(loopback_call(callee, f"call-{stream}", stream, **settings.pop("call", {})))
    return server, rest, HlsClient(server, rest.http)


def _avcc_nal_types(sample: bytes) -> list[int]:
    types, pos = [], 0
    while pos + 4 <= len(sample):
        (size,) = struct.unpack_from(">I", sample, pos)
        types.append(sample[pos + 4] & 0x1F)
        pos += 4 + size
    return types


def _first_video_packet(init: bytes, segment: bytes) -> tuple[bool, list[int], tuple[int, int]]:
    """A segment on its own (after the init segment): its first video
    sample's keyframe flag and NAL unit types, and the first picture decoded
    from it alone (an IDR needs nothing before it)."""
    with av.open(io.BytesIO(init + segment)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                frames = stream.codec_context.decode(packet)
                assert frames, "the segment's first picture does not decode on its own"
                return packet.is_keyframe, _avcc_nal_types(bytes(packet)), (frames[0].width, frames[0].height)
    raise AssertionError("no video sample in the segment")


def _check_far_end_media(path: Path, seconds: float, video: bool = True) -> None:
    """Decoded clean: the far end's moving 352x288 picture at its rate, and
    its 440 Hz tone, not silence."""
    assert avcheck.decode_errors(str(path)) == ""
    info = avcheck.probe(str(path))
    assert info["audio"]["codec_name"] == "aac", info
    if video:
        assert info["video"]["codec_name"] == "h264", info
        pictures = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                assert (frame.width, frame.height) == (SOURCE_WIDTH, SOURCE_HEIGHT)
                pictures.append(frame.to_ndarray(format="gray").astype(np.int16))
        assert len(pictures) >= MIN_FPS * seconds, len(pictures)
        moved = [float(np.abs(a - b).mean()) for a, b in zip(pictures, pictures[1:], strict=False)]
        assert np.median(moved) > 0.5, "the picture does not move"
    else:
        assert info["video"] is None, info
    _, samples, rate = avcheck.audio_samples(str(path))
    assert len(samples) >= rate * seconds * 0.9, (len(samples), rate)
    tail = samples[-rate:]
    assert float(np.sqrt(np.mean(tail**2))) > 0.05, "the audio is silence"
    assert abs(dominant_hz(tail, rate) - TONE_HZ) < 5


# --------------------------------------------------------- the segmenter
# Sans-IO: samples in, parts out, on a virtual clock (no peers needed).
SPS = bytes.fromhex("6742c01e95a0b04b20")  # 352x288 Constrained Baseline
PPS = bytes.fromhex("68ce3c80")


def _segmenter(keyframe_every: int, seconds: float, audio: bool = True, video_until: float | None = None,
               fps: int = 25) -> tuple[Segmenter, list[Any]]:
    video, sound = VideoTrack(SPS, PPS), AudioTrack(16000, 1, track_id=2)
    segmenter = Segmenter([video, sound] if audio else [video], 500_000, 2_000_000, 3_000_000)
    events = []
    for i in range(int(seconds * fps)):
        if video_until is None or i / fps < video_until:
            events.append((i / fps, video, b"\x00\x00\x00\x02\x65\x88", i * 90000 // fps, 0,
                           i % keyframe_every == 0))
    for k in range(int(seconds * 16000 / 1024) if audio else 0):
        events.append((k * 1024 / 16000 + 0.03, sound, b"\x21\x00", k * 1024, 1024, True))  # encoder delay
    for _, track, data, dts, duration, sync in sorted(events, key=lambda e: e[0]):
        segmenter.add(track, data, dts, duration, sync)
    segmenter.finish()
    return segmenter, segmenter.done


def test_segmenter_cuts_parts_within_the_target_and_segments_at_keyframes() -> None:
    _, parts = _segmenter(keyframe_every=25, seconds=10)
    segments: dict[int, list[Any]] = {}
    for part in parts:
        segments.setdefault(part.msn, []).append(part)
    assert len(segments) >= 4
    for items in segments.values():
        assert [p.index for p in items] == list(range(len(items)))
        assert items[0].independent and items[-1].last and not any(p.last for p in items[:-1])
        assert all(p.duration_us <= 500_000 for p in items), items
        assert all(p.duration_us >= 425_000 for p in items[:-1] if not p.independent)  # 85% of the target
        assert sum(p.duration_us for p in items) <= 3_000_000
    # one timeline: each part starts where the one before ended
    assert all(a.start_us + a.duration_us == b.start_us for a, b in zip(parts, parts[1:], strict=False))
    # the segments end at the source's keyframes (every second), from 1.5 s on: 2 s each
    assert [sum(p.duration_us for p in items) for items in segments.values()][:-1] == [2_000_000] * (
        len(segments) - 1)
    assert all(p.data[4:8] == b"moof" for p in parts)


def test_segmenter_ends_a_segment_without_a_keyframe_rather_than_exceed_the_target_duration() -> None:
    # a far end that sends one keyframe and never another, whatever it is asked
    _, parts = _segmenter(keyframe_every=10_000, seconds=10)
    durations: dict[int, int] = {}
    for part in parts:
        durations[part.msn] = durations.get(part.msn, 0) + part.duration_us
    assert len(durations) >= 3 and max(durations.values()) <= 3_000_000, durations
    assert [p.independent for p in parts if p.index == 0][1:] == [False] * (len(durations) - 1)


def test_segmenter_keeps_cutting_parts_on_audio_when_the_video_stops() -> None:
    _, parts = _segmenter(keyframe_every=25, seconds=8, video_until=2.0)
    after = [p for p in parts if p.start_us >= 2_500_000]
    assert after and all(p.duration_us <= 500_000 for p in after[:-1]), after
    assert parts[-1].start_us + parts[-1].duration_us >= 7_500_000
    assert all(p.duration_us <= 500_000 for p in parts), parts  # the last ones too


def test_segmenter_audio_only_parts_are_all_independent() -> None:
    sound = AudioTrack(16000, 1)
    segmenter = Segmenter([sound], 500_000, 2_000_000, 3_000_000)
    for k in range(100):
        segmenter.add(sound, b"\x21\x00", k * 1024, 1024, True)
    segmenter.finish()
    assert all(p.independent and p.duration_us <= 500_000 for p in segmenter.done)
    assert init_segment([sound])[4:8] == b"ftyp"


# ------------------------------------------------------------------ players
async def test_ffmpeg_plays_the_live_playlist_with_the_far_ends_picture_and_tone(
        server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    require_ffmpeg()
    server, _, hls = await _hls_server(server_with, callee, "hls1")
    started = time.monotonic()
    # more media than the playlist holds at first: ffmpeg must follow it live
    await ffmpeg_copy(hls.url("hls1"), tmp_path / "hls1.mp4", 8.0)
    print(f"HLS: ffmpeg read 8 s of the live playlist in {time.monotonic() - started:.1f} s")
    await asyncio.to_thread(_check_far_end_media, tmp_path / "hls1.mp4", 8.0)
    assert server.hls is not None and server.hls.requests[("playlist", 200)] >= 2  # it reloaded


async def test_audio_only_call_plays_with_ffmpeg(server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    require_ffmpeg()
    _, _, hls = await _hls_server(server_with, callee, "hls2", call={"hasVideo": "false"})
    playlist = await hls.playlist("hls2")
    # every AAC frame stands alone: every part is independent
    assert all(p.independent for s in playlist.segments for p in s.parts), playlist.text
    status, init, headers = await hls.get(hls.url("hls2", playlist.attrs("EXT-X-MAP")["URI"]))
    assert status == 200 and headers["Content-Type"] == "audio/mp4"
    await ffmpeg_copy(hls.url("hls2"), tmp_path / "hls2.mp4", 5.0)
    await asyncio.to_thread(_check_far_end_media, tmp_path / "hls2.mp4", 5.0, False)


async def test_chromium_plays_the_stream_natively(server_with: Any, callee: LoopbackCallee) -> None:
    require_chromium()
    server, _, hls = await _hls_server(server_with, callee, "hls3")
    # a page of another origin: the HLS answers carry Access-Control-Allow-Origin: *
    first, later = await chromium_plays_hls(hls.url("hls3"), server.base_url + "/health")
    assert later["error"] is None, later
    assert (later["w"], later["h"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), later
    assert later["t"] - first["t"] >= 3.0, (first, later)  # it keeps playing, in real time


# ------------------------------------------------------------ RFC 8216bis
async def test_playlists_keep_rfc8216bis_rules_and_blocking_reloads_wait_for_the_part(
        server_with: Any, callee: LoopbackCallee) -> None:
    server, rest, hls = await _hls_server(server_with, callee, "hls4")
    first = await hls.playlist("hls4")
    assert first.tags["EXT-X-VERSION"] and first.tags["EXT-X-MAP"] and "EXT-X-INDEPENDENT-SEGMENTS" in first.tags
    control = first.attrs("EXT-X-SERVER-CONTROL")
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert float(control["PART-HOLD-BACK"]) >= 3 * first.part_target
    assert len(first.segments) >= 3 and first.hint is not None and not first.endlist

    # Reloads over a few seconds: the same segment keeps its number, URI and
    # duration; none is skipped; no more than hls_segments are listed.
    seen: dict[int, Segment] = {}
    playlists = [first]
    for _ in range(10):
        await asyncio.sleep(0.6)
        playlists.append(await hls.playlist("hls4"))
    for before, after in zip(playlists, playlists[1:], strict=False):
        assert after.media_sequence >= before.media_sequence
        assert after.media_sequence <= before.segments[-1].msn + 1  # nothing was skipped
    for playlist in playlists:
        assert len(playlist.segments) <= server.settings.hls_segments
        assert [s.msn for s in playlist.segments] == list(range(playlist.media_sequence,
                                                                 playlist.media_sequence + len(playlist.segments)))
        for segment in playlist.segments:
            old = seen.setdefault(segment.msn, segment)
            assert (old.uri, old.duration) == (segment.uri, segment.duration)
    last = playlists[-1]
    assert last.segments[-1].msn >= first.segments[-1].msn + 2, "the playlist did not move on"

    # Durations: parts within PART-TARGET (and at least 85% of it unless
    # independent or last of their segment), segments within TARGETDURATION;
    # program date times present and following the durations.
    for playlist in playlists:
        for segment in playlist.segments:
            assert round(segment.duration) <= playlist.target_duration, segment
            assert segment.date is not None, segment
            for i, part in enumerate(segment.parts):
                assert part.duration <= playlist.part_target, part
                if not part.independent and i < len(segment.parts) - 1:
                    assert part.duration >= 0.85 * playlist.part_target, part
            if segment.parts:
                assert abs(sum(p.duration for p in segment.parts) - segment.duration) < 0.002, segment
                assert segment.parts[0].independent, segment
        for a, b in zip(playlist.segments, playlist.segments[1:], strict=False):
            assert a.date is not None and b.date is not None
            assert abs((b.date - a.date).total_seconds() - a.duration) < 0.002, (a, b)

    # Each segment starts with an IDR (SPS, PPS, slice type 5) and decodes on its own.
    init = await hls.media("hls4", last.attrs("EXT-X-MAP")["URI"])
    for segment in last.segments:
        keyframe, nal_types, size = _first_video_packet(init, await hls.media("hls4", segment.uri))
        assert keyframe and 5 in nal_types and 7 in nal_types, (segment.uri, nal_types)
        assert size == (SOURCE_WIDTH, SOURCE_HEIGHT)

    # A blocking reload for the hinted part is held until that part exists,
    # then answers with it.
    latest = await hls.playlist("hls4")
    assert latest.hint is not None
    hinted = re.fullmatch(r"part-[0-9a-f]{8}-(\d+)\.(\d+)\.m4s", latest.hint)
    assert hinted is not None, latest.hint
    msn, index = int(hinted.group(1)), int(hinted.group(2))
    started = time.monotonic()
    status, body, headers = await hls.get(hls.url("hls4") + f"?_HLS_msn={msn}&_HLS_part={index}")
    held = time.monotonic() - started
    assert status == 200 and "max-age" in headers["Cache-Control"]
    blocked = parse_playlist(body.decode())
    listed = [p.uri for s in blocked.segments for p in s.parts] + [p.uri for p in blocked.parts]
    # the part asked for, or (the segment ended at a keyframe first) the next segment's
    assert latest.hint in listed or blocked.segments[-1].msn >= msn, blocked.text
    assert 0.0 < held < 3 * latest.target_duration, held
    print(f"HLS: the blocking reload for part {msn}.{index} was held {held * 1000:.0f} ms")
    # The next hinted part is held until it exists too (or its segment ends first: a 404).
    assert blocked.hint is not None
    status, part, _ = await hls.get(hls.url("hls4", blocked.hint))
    if status == 200:
        assert part[4:8] == b"moof"
    else:
        assert status == 404 and (await hls.playlist("hls4")).media_sequence + 10 > msn

    # /metrics counts the muxed stream, its viewer (this client) and the requests
    async with rest.http.get(f"{server.base_url}/metrics") as res:
        metrics = await res.text()
    assert "sipstream_hls_streams 1.0" in metrics, metrics
    assert 'sipstream_viewers{protocol="hls",state="connected"} 1.0' in metrics, metrics
    assert re.search(r'sipstream_hls_requests_total\{code="200",kind="playlist"\} (\d+)', metrics), metrics

    # The call ends: the playlist says so (and a blocking reload does not wait).
    assert (await rest.post("/rest-api/call/terminate", {"callId": "call-hls4"}))[0] == 200
    ended: Playlist | None = None
    for _ in range(50):
        ended = await hls.playlist("hls4")
        if ended.endlist:
            break
        await asyncio.sleep(0.1)
    assert ended is not None and ended.endlist and ended.hint is None, ended
    nxt = ended.segments[-1].msn + 1
    started = time.monotonic()
    status, body, _ = await hls.get(hls.url("hls4") + f"?_HLS_msn={nxt}&_HLS_part=0")
    assert status == 200 and "#EXT-X-ENDLIST" in body.decode() and time.monotonic() - started < 1.0


# ------------------------------------------------------------- refusals
async def test_bad_requests_are_refused_never_a_500(server_with: Any, callee: LoopbackCallee) -> None:
    server, rest, hls = await _hls_server(server_with, callee, "hls5", hls_max_streams=1, hls_segment_s=1.0)
    assert (await hls.get(hls.url("nope")))[0] == 404
    playlist = await hls.playlist("hls5")
    for query in ("?_HLS_msn=abc", "?_HLS_msn=-1", "?_HLS_part=1", "?_HLS_msn=1&_HLS_part=x",
                  "?_HLS_msn=1&_HLS_msn=2", "?_HLS_msn=99999999", f"?_HLS_msn={playlist.segments[-1].msn + 1}"
                  f"&_HLS_part=40", "?_HLS_msn=1" + "1" * 30):
        status, body, _ = await hls.get(hls.url("hls5") + query)
        assert status == 400, (query, status, body)
    # Nothing outside the stream's own names: raw request lines, no client normalizing them.
    host, port = "127.0.0.1", int(hls.base.rsplit(":", 1)[1])
    for path in ("/hls5/../../etc/passwd", "/hls5/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/../etc/passwd",
                 "/hls5/init-00000000.mp4", "/hls5/seg-zz-1.m4s", "/hls5/hls5.m3u8/x", "/hls5/", "/",
                 "/hls5/..%2Fhls5.m3u8", "/hls5/part-00000000-0.0.m4s"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.split()[1] in (b"400", b"404"), (path, answer[:200])
        assert b"root:" not in answer
    # hls_max_streams=1: a second stream waits its turn
    await rest.start_call(loopback_call(callee, "call-hls5b", "hls5b"))
    status, body, headers = await hls.get(hls.url("hls5b"))
    assert status == 503 and "Retry-After" in headers, (status, body)
    assert server.hls is not None and server.hls.requests[("playlist", 400)] == 8


async def test_tokens_open_one_stream_and_the_playlist_carries_them(
        server_with: Any, callee: LoopbackCallee) -> None:
    secret, api_token = "playback-secret-0123456789abcdef", "api-token-0123456789"
    server, rest = await server_with(hls_port=free_tcp_port(), hls_segment_s=1.0,
                                     playback_token_secret=secret, rest_auth_token=api_token)
    rest.http.headers["Authorization"] = f"Bearer {api_token}"
    await rest.start_call(loopback_call(callee, "call-hls6", "hls6"))
    async with aiohttp.ClientSession() as http:  # no API token here
        hls = HlsClient(server, http)
        assert (await hls.get(hls.url("hls6")))[0] == 401
        assert (await hls.get(hls.url("hls6") + "?token=garbage"))[0] == 403
        assert (await hls.get(hls.url("hls6") + f"?token={playback_token(secret, 'other')}"))[0] == 403
        expired = playback_token(secret, "hls6", ttl_s=10, now=time.time() - 60)
        assert (await hls.get(hls.url("hls6") + f"?token={expired}"))[0] == 403
        token = playback_token(secret, "hls6")
        playlist = await hls.playlist("hls6", f"?token={token}")
        # every URI in it carries the token, so the player's next requests pass
        uris = [playlist.attrs("EXT-X-MAP")["URI"], playlist.hint or ""] + [s.uri for s in playlist.segments]
        assert all(uri.endswith(f"?token={token}") for uri in uris), playlist.text
        assert await hls.media("hls6", playlist.segments[-1].uri)
        assert (await hls.get(hls.url("hls6", playlist.segments[-1].uri.split("?")[0])))[0] == 401
        # as a bearer token; the API token opens it too
        status, body, _ = await hls.get(hls.url("hls6"), headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and "?token=" not in body.decode()
        assert (await hls.get(hls.url("hls6") + f"?token={api_token}"))[0] == 200


async def test_an_idle_stream_stops_muxing_and_its_hls_dir_files_go_and_stop_ends_the_rest(
        server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    hls_dir = tmp_path / "hls"
    # a name that could not be a directory as it is
    server, _, hls = await _hls_server(server_with, callee, "..hls 7", hls_dir=str(hls_dir),
                                       hls_idle_timeout_s=2.0, hls_segment_s=1.0)
    name = urllib.parse.quote("..hls 7", safe="")
    playlist = await hls.playlist(name)
    stream = server.gateway.streams["..hls 7"]
    assert stream.has_subscribers
    wanted = {playlist.attrs("EXT-X-MAP")["URI"], playlist.segments[-1].uri, "..hls 7.m3u8"}
    await wait_until(lambda: wanted <= {p.name for p in tmp_path.rglob("*")}, timeout=2,
                     what=f"{wanted} written to hls_dir")  # by the muxer's thread, after it answered
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(hls_dir in p.resolve().parents for p in files), files
    assert len({p.parent for p in files}) == 1 and re.fullmatch(r"hls_7-[0-9a-f]{8}", files[0].parent.name), files
    # nobody asks any more: the muxer stops, unsubscribes and its files go
    await wait_until(lambda: not stream.has_subscribers, timeout=8, what="the idle muxer to stop")
    await wait_until(lambda: not any(p.is_file() for p in tmp_path.rglob("*")), timeout=5,
                     what="its files to be removed")
    assert server.hls is not None and not server.hls.muxers
    # and the next player starts it again
    again = await hls.playlist(name)
    assert stream.has_subscribers
    # Stopping the port ends its muxers at once, and answers a request held for a part.
    held = asyncio.create_task(hls.get(hls.url(name) + f"?_HLS_msn={again.segments[-1].msn + 2}"))
    await asyncio.sleep(0.3)
    assert not held.done()
    started = time.monotonic()
    await server.hls.stop()
    status, _, _ = await asyncio.wait_for(held, 5)
    assert status in (200, 503) and time.monotonic() - started < 2.5
    assert not stream.has_subscribers
