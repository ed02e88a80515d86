"""RTSP playback (egress/rtsp.py over the Rust engine's plain-RTP viewers),
against real players: ffmpeg over TCP-interleaved and UDP (decoded at the
source's size, the beep heard, flash and beep still together), GStreamer's
rtspsrc (decoded frames counted), Digest auth and playback tokens; and
hostile or broken clients: garbage, unknown streams and sessions, an
unsupported transport, an oversized request, an idle client, and a TCP
client that stops reading, which is cut off while another viewer keeps
getting everything."""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from sipstream.api.auth import playback_token
from sipstream.testing import LoopbackCallee

from .conftest import free_tcp_port, loopback_call, wait_until
from .media_checks import dominant_hz
from .peers import avcheck
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.players import ffmpeg_copy, gstreamer_rtsp_decode, run
from .peers.util import free_udp_port_pair

SECRET = "s" * 40


def require_players() -> None:
    if not (shutil.which("ffmpeg") and shutil.which("gst-launch-1.0")):
        pytest.skip("ffmpeg and gst-launch-1.0 (gstreamer1.0-plugins-good, -libav) are needed")


async def _serve(server_with: Any, callee: LoopbackCallee, stream: str, **settings: Any) -> tuple[Any, str]:
    port = free_tcp_port()
    srv, rest = await server_with(rtsp_port=port, **settings)
    await rest.start_call(loopback_call(callee, f"call-{stream}", stream))
    live = srv.gateway.streams[stream]
    await wait_until(lambda: live.feed.stats()["keyframes"] > 0, 15, "a keyframe from the callee")
    return srv, f"rtsp://127.0.0.1:{port}/{stream}"


async def _ffmpeg_record(url: str, transport: str, path: Path, seconds: float) -> None:
    await ffmpeg_copy(url, path, seconds, "-rtsp_transport", transport, audio="pcm_s16le")


class RtspClient:
    """A raw RTSP client over one TCP connection, to say what players do not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.cseq = 0

    @classmethod
    async def connect(cls, url: str, rcvbuf: int = 0) -> RtspClient:
        host, port = url.split("/")[2].split(":")
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def request(self, method: str, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await self.response()

    async def raw(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(data)
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        while True:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
            while head.startswith(b"$"):  # interleaved frames before the answer
                length = int.from_bytes(head[2:4], "big")
                rest = head[4:]
                if len(rest) < length:
                    rest += await self.reader.readexactly(length - len(rest))
                head = rest[length:]
                if b"\r\n\r\n" not in head:
                    head += await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode().split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            return status, headers, body

    async def closed(self, timeout: float) -> bool:
        """The server closed the connection within ``timeout`` (reading what it sends)."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
            return True
        except (asyncio.TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


async def test_ffmpeg_plays_over_tcp_and_udp_decoded_and_in_sync(server_with: Any, tmp_path: Path) -> None:
    require_players()
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, fps=SOURCE_FPS, loop_seconds=2,
                            sync_marks=True)
    await callee.start()
    try:
        srv, url = await _serve(server_with, callee, "rtsp1")
        files = {t: tmp_path / f"{t}.mkv" for t in ("tcp", "udp")}
        started = asyncio.gather(*(_ffmpeg_record(url, t, files[t], 9) for t in files))
        # both count as the stream's viewers, and as RTSP viewers in /metrics
        stream = srv.gateway.streams["rtsp1"]
        await wait_until(lambda: stream.viewers == 2, 10, "two RTSP viewers")
        await wait_until(lambda: len(srv.whep.plain) == 2, 5, "two plain viewers")
        async with aiohttp.ClientSession() as http, http.get(f"{srv.base_url}/metrics") as res:
            assert 'sipstream_viewers{protocol="rtsp",state="connected"} 2.0' in await res.text()
        await started
        for transport, path in files.items():
            info = await asyncio.to_thread(avcheck.probe, path)
            video = next(s for s in info["streams"] if s["codec_type"] == "video")
            assert (video["codec_name"], video["width"], video["height"]) == ("h264", SOURCE_WIDTH, SOURCE_HEIGHT)
            assert any(s["codec_type"] == "audio" for s in info["streams"]), transport
            # decoded clean, and ffmpeg's own recording never re-timed: each
            # track's first packet follows its first SR, so no dts goes back
            errors = await asyncio.to_thread(avcheck.decode_errors, path)
            assert errors == "", (transport, errors)
            sync = await asyncio.to_thread(avcheck.measure_av_sync, str(path), SOURCE_FPS, 1000.0, 2.0)
            print("AVSYNC", transport, {k: sync[k] for k in ("pairs", "offsets_ms", "pair_times_s", "max_abs_ms")})
            assert len(sync["beeps"]) >= 3, (transport, sync)  # the audio is the callee's, not silence
            # video starts at a keyframe, maybe in the middle of a flash: the
            # first pair may measure that cut, not the sync
            offsets = sync["offsets_ms"][1:]
            assert len(offsets) >= 2, (transport, sync)
            assert max(abs(o) for o in offsets) <= 80, (transport, sync)
        await wait_until(lambda: stream.viewers == 0, 5, "the viewers gone after TEARDOWN")
    finally:
        await callee.stop()


async def _watch_reports(srv: Any, into: list[dict[str, Any]]) -> None:
    """Collect the counters of every RTSP viewer whose client sent RTCP, until cancelled."""
    while True:
        into.extend(s for v in list(srv.whep.plain) if (s := srv.whep.plain_stats(v)) and s["reports"])
        await asyncio.sleep(0.2)


async def test_gstreamer_rtspsrc_decodes_video_and_audio(server_with: Any, callee: LoopbackCallee,
                                                         tmp_path: Path) -> None:
    require_players()
    srv, url = await _serve(server_with, callee, "rtsp2")
    for protocols in ("tcp", "udp"):
        reports: list[dict[str, Any]] = []
        # what rtspsrc's RTCP reports said (interleaved, or to the UDP pair)
        watcher = asyncio.create_task(_watch_reports(srv, reports))
        try:
            count, pcm, log = await gstreamer_rtsp_decode(url, protocols, tmp_path, SOURCE_WIDTH, SOURCE_HEIGHT)
        finally:
            watcher.cancel()
        assert reports and reports[-1]["lost"] == 0 and reports[-1]["jitter_ms"] is not None, (protocols, reports)
        assert count >= SOURCE_FPS * 2, (protocols, count, log[-2000:])
        assert len(pcm) >= 8000 * 2, (protocols, len(pcm))
        assert abs(dominant_hz(pcm[-8000:].astype(float), 8000) - 440) < 15, protocols


async def test_an_opus_call_plays_with_its_opus_forwarded(server_with: Any, callee: LoopbackCallee,
                                                           tmp_path: Path) -> None:
    require_players()
    _, url = await _serve(server_with, callee, "rtsp7", codecs="opus,h264")
    client = await RtspClient.connect(url)
    try:
        status, _, sdp = await client.request("DESCRIBE", url)
    finally:
        client.close()
    assert status == 200 and b"a=rtpmap:111 opus/48000/2" in sdp, sdp
    path = tmp_path / "opus.mkv"
    await ffmpeg_copy(url, path, 5, "-rtsp_transport", "udp", audio="pcm_s16le")
    info = await asyncio.to_thread(avcheck.probe, path)
    assert info["audio"]["sample_rate"] in (48000, "48000"), info["audio"]
    assert info["video"]["codec_name"] == "h264", info["streams"]
    assert await asyncio.to_thread(avcheck.decode_errors, path) == ""
    _, samples, rate = await asyncio.to_thread(avcheck.audio_samples, str(path))
    tail = samples[-rate:]
    assert float(np.sqrt(np.mean(tail**2))) > 0.05, "the audio is silence"
    assert abs(dominant_hz(tail, rate) - 440) < 5


def _digest(user: str, password: str, challenge: str, method: str, uri: str) -> str:
    fields = dict(part.strip().split("=", 1) for part in challenge.removeprefix("Digest ").split(","))
    realm, nonce = fields["realm"].strip('"'), fields["nonce"].strip('"')
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}"')


async def test_digest_auth_and_playback_tokens(server_with: Any, callee: LoopbackCallee,
                                               caplog: pytest.LogCaptureFixture) -> None:
    require_players()
    _, url = await _serve(server_with, callee, "rtsp3", rtsp_auth=True, rtsp_user="viewer",
                          rtsp_password="pa55-word", playback_token_secret=SECRET)
    client = await RtspClient.connect(url)
    try:
        status, headers, _ = await client.request("OPTIONS", url)
        assert status == 200 and "DESCRIBE" in headers["public"]  # OPTIONS needs no credentials
        status, headers, _ = await client.request("DESCRIBE", url)
        assert status == 401 and headers["www-authenticate"].startswith("Digest ")
        wrong = _digest("viewer", "nope", headers["www-authenticate"], "DESCRIBE", url)
        assert (await client.request("DESCRIBE", url, Authorization=wrong))[0] == 401
        right = _digest("viewer", "pa55-word", headers["www-authenticate"], "DESCRIBE", url)
        status, _, body = await client.request("DESCRIBE", url, Authorization=right)
        assert status == 200 and b"m=video" in body
        # a playback token for this stream is enough; another stream's is not
        good = f"{url}?token={playback_token(SECRET, 'rtsp3', ttl_s=60)}"
        assert (await client.request("DESCRIBE", good))[0] == 200
        other = f"{url}?token={playback_token(SECRET, 'other', ttl_s=60)}"
        assert (await client.request("DESCRIBE", other))[0] == 401
    finally:
        client.close()
    # a real player with the credentials in its URL plays
    with_user = url.replace("rtsp://", "rtsp://viewer:pa55-word@")
    code, out = await run("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", with_user)
    assert code == 0 and "codec_name=h264" in out, out[-1000:]
    # and one with only a token in its URL (its SETUP and PLAY URLs keep it)
    tokened = f"{url}?token={playback_token(SECRET, 'rtsp3', ttl_s=60)}"
    code, out = await run("ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", tokened,
                           "-t", "2", "-f", "null", "-")
    assert code == 0, out[-1000:]
    assert "pa55-word" not in caplog.text


async def test_the_api_token_alone_locks_rtsp_as_it_locks_the_http_port(server_with: Any,
                                                                          callee: LoopbackCallee) -> None:
    port = free_tcp_port()
    _, rest = await server_with(rtsp_port=port, rest_auth_token="api-token-6")
    rest.http.headers["Authorization"] = "Bearer api-token-6"
    await rest.start_call(loopback_call(callee, "call-rtsp6", "rtsp6"))
    url = f"rtsp://127.0.0.1:{port}/rtsp6"
    client = await RtspClient.connect(url)
    try:
        assert (await client.request("DESCRIBE", url))[0] == 401
        assert (await client.request("DESCRIBE", f"{url}?token=wrong"))[0] == 403
        status, _, body = await client.request("DESCRIBE", f"{url}?token=api-token-6")
        assert status == 200 and b"m=video" in body
    finally:
        client.close()


async def test_bad_requests_get_the_rfc_errors_and_never_a_crash(server_with: Any, callee: LoopbackCallee) -> None:
    srv, url = await _serve(server_with, callee, "rtsp4", rtsp_request_timeout_s=1.0, rtsp_max_request_bytes=2048,
                            rtsp_session_timeout_s=2.0)
    base = url.rsplit("/", 1)[0]
    client = await RtspClient.connect(url)
    try:
        assert (await client.raw(b"OPTIONS * RTSP/1.0\r\n\r\n"))[0] == 400  # no CSeq
        assert (await client.request("DESCRIBE", f"{base}/nosuchstream"))[0] == 404
        assert (await client.request("DESCRIBE", "http://example.com/x"))[0] == 400
        assert (await client.request("FLY", url))[0] == 501
        status, headers, _ = await client.request("RECORD", url)
        assert status == 405 and "PLAY" in headers["allow"]
        assert (await client.request("PLAY", url))[0] == 454  # no session
        assert (await client.request("PLAY", url, Session="deadbeef"))[0] == 454
        assert (await client.request("TEARDOWN", url, Session="deadbeef"))[0] == 454
        track = f"{url}/trackID=1"
        assert (await client.request("SETUP", track, Transport="RTP/AVP;multicast"))[0] == 461
        assert (await client.request("SETUP", track, Transport="RAW/RAW/UDP;unicast"))[0] == 461
        assert (await client.request("SETUP", track, Transport="RTP/AVP;unicast"))[0] == 461  # no client_port
        assert (await client.request("SETUP", f"{url}/trackID=7", Transport="RTP/AVP/TCP;interleaved=0-1"))[0] == 404
        status, headers, _ = await client.request("SETUP", track, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        assert status == 200 and "interleaved=0-1" in headers["transport"]
        session = headers["session"].split(";")[0]
        assert headers["session"].endswith(";timeout=2")
        # a second session on the connection, or a track twice over another transport
        assert (await client.request("SETUP", f"{url}/trackID=0",
                                     Transport="RTP/AVP;unicast;client_port=5000-5001", Session=session))[0] == 461
        # a second session on one connection: 459 (SETUP it with the session's header)
        assert (await client.request("SETUP", f"{url}/trackID=0", Transport="RTP/AVP/TCP;interleaved=2-3"))[0] == 459
        assert (await client.request("GET_PARAMETER", url, Session=session))[0] == 200
        assert (await client.request("TEARDOWN", url, Session=session))[0] == 200
        assert (await client.raw(b"DESCRIBE " + url.encode() + b" RTSP/2.0\r\nCSeq: 9\r\n\r\n"))[0] == 505
    finally:
        client.close()
    # garbage, then an oversized request: answered, and the connection closed
    client = await RtspClient.connect(url)
    assert (await client.raw(b"\x00\x01garbage\xff\r\n\r\n"))[0] == 400
    assert await client.closed(3)
    client = await RtspClient.connect(url)
    assert (await client.raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + b"a" * 4000 + b"\r\n\r\n"))[0] == 413
    assert await client.closed(3)
    # an idle client, and one that never finishes its request, are closed
    idle = await RtspClient.connect(url)
    slow = await RtspClient.connect(url)
    slow.writer.write(b"OPTIONS * RTSP/1.0\r\n")
    started = time.monotonic()
    assert await idle.closed(5) and await slow.closed(5)
    assert time.monotonic() - started < 4
    # a session playing over UDP: RTP reaches the client's port from the
    # announced server port; with no keep-alive it ends after its timeout
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.settimeout(5)
    client = await RtspClient.connect(url)
    port = rtp.getsockname()[1]
    status, headers, _ = await client.request("SETUP", f"{url}/trackID=0",
                                              Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
    assert status == 200 and "server_port=" in headers["transport"]
    server_rtp = int(headers["transport"].split("server_port=")[1].split("-")[0])
    session = headers["session"].split(";")[0]
    status, headers, _ = await client.request("PLAY", url, Session=session)
    assert status == 200 and "seq=" in headers["rtp-info"]
    data, sender = await asyncio.to_thread(rtp.recvfrom, 2048)
    assert sender == ("127.0.0.1", server_rtp) and data[1] & 0x7F == 0 and len(data) == 12 + 160  # PCMU
    # a playing session takes no new track
    status, _, _ = await client.request("SETUP", f"{url}/trackID=1", Session=session,
                                        Transport=f"RTP/AVP;unicast;client_port={port + 2}-{port + 3}")
    assert status == 455
    assert len(srv.whep.plain) == 1
    started = time.monotonic()
    assert await client.closed(6)
    assert 1.5 < time.monotonic() - started < 5
    await wait_until(lambda: not srv.whep.plain, 3, "the timed-out session's viewer gone")
    rtp.close()
    # mutated requests, many at once: each is answered with a 4xx/5xx other
    # than 500 (no handler failed) or times out; none takes the server down
    rng = random.Random(13)
    valid = (f"SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nSession: x\r\n"
             "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nContent-Length: 0\r\n\r\n").encode()

    async def mutated(i: int) -> int:
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data) - 4)] = rng.randrange(256)
        client = await RtspClient.connect(url)
        try:
            return (await client.raw(bytes(data)))[0]
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            return 0
        finally:
            client.close()

    answers = await asyncio.gather(*(mutated(i) for i in range(40)))
    print("MUTATED", sorted(answers))
    assert 500 not in answers and any(a >= 400 for a in answers), answers
    # the server still serves
    client = await RtspClient.connect(url)
    assert (await client.request("OPTIONS", url))[0] == 200
    client.close()


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on loopback, on an even port and the next."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise AssertionError("no free UDP port pair")


def _receiver_report(ssrc: int, fraction_lost: int, lost: int, jitter: int) -> bytes:
    """An RTCP RR (RFC 3550 §6.4.2) from SSRC 0x5151 with one block on ``ssrc``."""
    block = struct.pack("!IB3sIIII", ssrc, fraction_lost, lost.to_bytes(3, "big"), 100, jitter, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, 7, 0x5151) + block


async def test_a_udp_clients_rtcp_reports_keep_its_session_alive_and_give_its_loss(
        server_with: Any, callee: LoopbackCallee) -> None:
    # the UDP pair where the settings say
    pair = free_udp_port_pair(2)
    srv, url = await _serve(server_with, callee, "rtsp6", rtsp_session_timeout_s=2.0, rtsp_udp_port=pair)
    rtp, rtcp = _udp_pair()
    port = rtp.getsockname()[1]
    client = await RtspClient.connect(url)
    try:
        status, headers, _ = await client.request("SETUP", f"{url}/trackID=0",
                                                  Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
        assert status == 200 and f"server_port={pair}-{pair + 1}" in headers["transport"], headers
        ssrc = int(headers["transport"].split("ssrc=")[1].split(";")[0], 16)
        session = headers["session"].split(";")[0]
        assert (await client.request("PLAY", url, Session=session))[0] == 200
        (viewer,) = srv.whep.plain
        # RTCP only, for three session timeouts: the session lives on
        for _ in range(12):
            rtcp.sendto(_receiver_report(ssrc, 64, 5, 80), ("127.0.0.1", pair + 1))
            await asyncio.sleep(0.5)
        assert srv.whep.plain_stats(viewer) is not None, "the session ended despite the client's RTCP"
        stats = srv.whep.plain_stats(viewer)
        assert stats is not None and stats["reports"] >= 8, stats
        # the client's loss and jitter (8 kHz: 80 units are 10 ms)
        assert (stats["lost"], stats["loss"], stats["jitter_ms"]) == (5, 0.25, 10.0), stats
        rtp.settimeout(2)
        assert len(await asyncio.to_thread(rtp.recv, 2048)) == 12 + 160  # still playing
        # silence: it ends after a timeout or two (plus the engine's 1 s snapshot)
        started = time.monotonic()
        assert await client.closed(8)
        assert time.monotonic() - started < 6.5
        await wait_until(lambda: not srv.whep.plain, 3, "the viewer gone with its session")
    finally:
        client.close()
        rtp.close()
        rtcp.close()


async def test_a_tcp_client_that_stops_reading_is_cut_off_and_others_keep_playing(
        server_with: Any, callee: LoopbackCallee, tmp_path: Path) -> None:
    require_players()
    srv, url = await _serve(server_with, callee, "rtsp5", rtsp_tcp_max_backlog_bytes=64 * 1024)
    stream = srv.gateway.streams["rtsp5"]
    good = tmp_path / "good.mkv"
    player = asyncio.create_task(_ffmpeg_record(url, "tcp", good, 8))
    stuck = await RtspClient.connect(url, rcvbuf=4096)
    status, headers, _ = await stuck.request("DESCRIBE", url)
    assert status == 200
    status, headers, _ = await stuck.request("SETUP", f"{url}/trackID=1",
                                             Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    session = headers["session"].split(";")[0]
    assert (await stuck.request("PLAY", url, Session=session))[0] == 200
    await wait_until(lambda: len(srv.whep.plain) == 2, 10, "both viewers playing")
    # ... and the stuck client reads nothing more: cut off, its session gone
    await wait_until(lambda: len(srv.whep.plain) == 1, 20, "the stuck client cut off")
    await player
    info = await asyncio.to_thread(avcheck.probe, good)
    assert float(info["format"]["duration"]) >= 7
    # every picture of its 8 s decoded, with no error (a lost packet would show)
    assert await asyncio.to_thread(avcheck.decode_errors, good) == ""
    code, out = await run("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                           "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(good))
    assert code == 0 and int(out.strip()) >= SOURCE_FPS * 7, out
    stuck.close()
    await wait_until(lambda: stream.viewers == 0, 5, "no viewer left")
