"""The Rust WebRTC engine behind WHEP: one port for every viewer, ICE-lite
answers, load-client viewers that count every SRTP packet (by sequence
number, without decrypting), hostile datagrams, viewers that never connect,
audio-only streams, and 200 viewers plus Chromium on one stream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call, wait_until
from .media_checks import MIN_FPS
from .peers.chromium import whep_play
from .peers.fixtures import require, require_chromium

ROOT = Path(__file__).resolve().parent.parent
WHEP_LOAD = ROOT / "target" / "release" / "examples" / "whep_load"
# After the joins, before the load client's window: a viewer that connected
# last waits up to one keyframe request interval (1 s) for its first picture.
WARMUP_S = 1.5


def whep_load_binary() -> Path:
    require(None if WHEP_LOAD.exists() else
            f"{WHEP_LOAD} missing (cargo build --release --example whep_load; scripts/test builds it)")
    return WHEP_LOAD


async def run_load(url: str, viewers: int, seconds: float, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """Run the Rust load client (its window of ``seconds`` starts WARMUP_S
    after the last join); its JSON result (it exits 1 when a viewer did not
    connect)."""
    out = tmp_path / f"load-{viewers}.json"
    proc = await asyncio.create_subprocess_exec(
        str(whep_load_binary()), "--url", url, "--viewers", str(viewers), "--duration", str(seconds),
        "--warmup", str(WARMUP_S), "--json", str(out), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        text, _ = await asyncio.wait_for(proc.communicate(), seconds + WARMUP_S + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    print(text.decode(errors="replace"))
    assert out.exists(), text.decode(errors="replace")
    result = json.loads(out.read_text())
    result["exit"] = proc.returncode
    return result


def assert_everything_delivered(result: dict[str, Any], tracks: int = 2) -> None:
    """Every viewer connected and received every packet sent to it (no gap
    in any SSRC's sequence numbers) on every track, and none starved."""
    assert result["exit"] == 0 and result["connected"] == result["viewers"], result.get("failed")
    assert result["lost_total"] == 0 and result["delivery"] == 1.0, result
    per_viewer = result["per_viewer"]
    assert all(v["ssrcs"] == tracks for v in per_viewer), [v["ssrcs"] for v in per_viewer]
    assert result["rtp_min"] >= 0.95 * result["rtp_max"] > 0, result


async def recvonly_offer(*kinds: str) -> str:
    """An offer as a browser makes it (aiortc: candidates included)."""
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def post_offer(rest: Rest, stream: str, sdp: str) -> tuple[int, str, str | None]:
    async with rest.http.post(rest.base_url + f"/whep/{stream}", data=sdp,
                              headers={"Content-Type": "application/sdp"}) as res:
        return res.status, await res.text(), res.headers.get("Location")


async def test_the_answer_is_ice_lite_with_one_candidate_on_the_engine_port(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "we1", "wes1"))
    status, answer, location = await post_offer(rest, "wes1", await recvonly_offer("audio", "video"))
    assert status == 201 and location is not None, answer
    lines = answer.splitlines()
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    assert len(candidates) == 1 and f" 127.0.0.1 {server.whep.port} typ host" in candidates[0], candidates
    assert "a=ice-lite" in lines and "a=setup:passive" in lines, answer
    assert any(line.startswith("a=fingerprint:sha-256 ") for line in lines), answer
    assert "a=rtpmap:0 PCMU/8000" in lines and any("H264/90000" in line for line in lines), answer
    # a second viewer is answered on the same port
    status, second, _ = await post_offer(rest, "wes1", await recvonly_offer("audio", "video"))
    assert status == 201 and f" 127.0.0.1 {server.whep.port} typ host" in second
    assert len(server.whep.sessions) == 2


async def test_offers_the_engine_cannot_answer_get_a_clear_400(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "we2", "wes2"))
    vp8_only = "\r\n".join([
        "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
        "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly", "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000", "",
    ])
    status, text, _ = await post_offer(rest, "wes2", vp8_only)
    assert status == 400 and "No common codecs" in text, text
    status, text, _ = await post_offer(rest, "wes2", "v=0\r\nm=nonsense\r\n")
    assert status == 400, text
    assert server.whep.sessions == {}


async def test_a_viewer_that_never_connects_is_ended_and_frees_its_place(
    server_with: Any, callee: LoopbackCallee
) -> None:
    server, rest = await server_with(webrtc_connect_timeout_s=2, max_viewers=1)
    await rest.start_call(loopback_call(callee, "we3", "wes3"))
    status, _, _ = await post_offer(rest, "wes3", await recvonly_offer("audio", "video"))
    assert status == 201
    status, text, _ = await post_offer(rest, "wes3", await recvonly_offer("audio", "video"))
    assert status == 503 and "max_viewers" in text
    # nobody answers ICE: the engine ends the session, and the place is free
    await wait_until(lambda: not server.whep.sessions, 10, "the unconnected viewer ended")
    status, _, _ = await post_offer(rest, "wes3", await recvonly_offer("audio", "video"))
    assert status == 201


async def test_hostile_datagrams_to_the_viewer_port_are_dropped_and_viewers_keep_everything(
    server: Server, rest: Rest, callee: LoopbackCallee, tmp_path: Path
) -> None:
    await rest.start_call(loopback_call(callee, "we4", "wes4"))
    url = server.base_url + "/whep/wes4"
    load = asyncio.create_task(run_load(url, 5, 6, tmp_path))
    await wait_until(lambda: len(server.whep.sessions) == 5, 20, "5 viewers joined")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", server.whep.port)
    rng = os.urandom
    sent = 0
    try:
        for i in range(4000):
            first = (0, 1, 20, 23, 128, 200, 255)[i % 7]  # STUN, DTLS, RTP, RTCP-looking, other
            body = bytes([first]) + rng(i % 1400)
            if first < 2 and len(body) >= 20:  # a STUN header naming a made-up ufrag
                body = struct.pack("!HHI", 0x0001, len(body) - 20, 0x2112A442) + body[8:]
            sock.sendto(body, target)
            sent += 1
            if i % 200 == 0:
                await asyncio.sleep(0.01)
    finally:
        sock.close()
    result = await load
    assert_everything_delivered(result)
    # what the kernel let through was counted and dropped (the stats are at
    # most a second old; the load ran 6 s)
    webrtc = (await rest.get("/health"))["webrtc"]
    assert webrtc["unroutable"] >= sent // 2, webrtc


async def test_an_audio_only_stream_plays_its_audio_only(
    server: Server, rest: Rest, callee: LoopbackCallee, tmp_path: Path
) -> None:
    await rest.start_call(loopback_call(callee, "we5", "wes5", hasVideo="false"))
    result = await run_load(server.base_url + "/whep/wes5", 3, 3, tmp_path)
    assert_everything_delivered(result, tracks=1)
    # ~50 audio packets a second each (20 ms PCMU), nothing else
    assert result["rtp_min"] >= 40 * result["window_s"], result


async def test_two_hundred_load_viewers_and_chromium_receive_everything_for_20_s(
    server_with: Any, callee: LoopbackCallee, tmp_path: Path
) -> None:
    require_chromium()
    server, rest = await server_with(max_viewers=300, max_viewers_per_client=0)  # one load client for 200 viewers
    await rest.start_call(loopback_call(callee, "we6", "wes6"))
    url = server.base_url + "/whep/wes6"
    load = asyncio.create_task(run_load(url, 200, 20, tmp_path))
    await wait_until(lambda: len(server.whep.sessions) >= 200, 30, "200 viewers joined")
    stats = await whep_play(server.base_url + "/health", url, seconds=30, measure_s=15)
    result = await load
    assert_everything_delivered(result)
    # ~25 video frames and 50 audio packets a second reached every viewer
    assert result["rtp_min"] >= 70 * result["window_s"], result
    # and Chromium, among them, played the far end's picture at its rate
    assert stats["error"] is None and stats["measuredS"] >= 14, stats
    assert stats["fps"] >= MIN_FPS and stats["videoPacketsLost"] == 0, stats
    health = await rest.get("/health")
    assert health["webrtc"]["send_errors"] == 0, health["webrtc"]


async def test_a_keyframe_request_within_the_interval_is_made_when_it_ends() -> None:
    """Keyframe requests are throttled to one per interval; one that comes
    within it (a viewer joining just after another) is made when the
    interval ends, once, and not after the stream closed."""
    from sipstream.media.stream import Stream

    stream = Stream("kf", True, True, keyframe_interval_s=0.3)
    sent: list[float] = []
    stream.on_keyframe_request = lambda: sent.append(asyncio.get_running_loop().time())
    start = asyncio.get_running_loop().time()
    stream.request_keyframe("first viewer")
    stream.request_keyframe("second viewer")
    stream.request_keyframe("third viewer")
    assert len(sent) == 1
    await asyncio.sleep(0.5)
    assert len(sent) == 2 and 0.25 <= sent[1] - start < 0.5, sent
    stream.request_keyframe("a late one")
    stream.close()
    await asyncio.sleep(0.4)
    assert len(sent) == 2, sent
