"""The gateway's SIP port against hostile and odd input, over UDP and TCP:
RFC answers (200/400/405/481/501), TCP framing with partial and pipelined
messages, and a garbage flood that leaves a live call untouched."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest
from sipstream._core import SipMessage
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call
from .media_checks import real_frames_grow


def _request(method: str, call_id: str = "t-1", extra: str = "") -> bytes:
    return (
        f"{method} sip:sipstream@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}{method}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:sipstream@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def _sip_port(server: Server) -> int:
    assert server.gateway.ua is not None
    return server.gateway.ua.transport.local_address.port


async def _udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> SipMessage:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        return SipMessage.parse(reply)
    finally:
        sock.close()


async def test_requests_outside_a_dialog_get_the_rfc_answer(server: Server) -> None:
    port = _sip_port(server)
    expected = {"OPTIONS": 200, "BYE": 481, "INFO": 481, "REGISTER": 405, "FOOBAR": 501, "INVITE": 480}
    for method, status in expected.items():
        reply = await _udp_exchange(port, _request(method, call_id=f"x-{method}"))
        assert reply.status == status, method
        assert reply.header("Via", ) is not None and reply.call_id == f"x-{method}"
    options = await _udp_exchange(port, _request("OPTIONS"))
    assert "INVITE" in (options.header("Allow") or "")


async def test_a_request_missing_a_mandatory_header_gets_400(server: Server) -> None:
    data = _request("OPTIONS").replace(b"CSeq: 1 OPTIONS\r\n", b"")
    reply = await _udp_exchange(_sip_port(server), data)
    assert reply.status == 400 and "CSeq" in (reply.reason or "")


async def test_tcp_framing_handles_pipelined_and_split_messages(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _sip_port(server))
    try:
        first, second, third = (_request("OPTIONS", call_id=f"tcp-{i}") for i in range(3))
        writer.write(b"\r\n\r\n" + first + second)  # a keep-alive, then two messages in one write
        writer.write(third[:25])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(third[25:])
        await writer.drain()
        replies: list[SipMessage] = []
        buffer = b""
        while len(replies) < 3:
            buffer += await asyncio.wait_for(reader.read(65535), 3)
            while b"\r\n\r\n" in buffer:
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                replies.append(SipMessage.parse(head + b"\r\n\r\n"))
        assert [r.call_id for r in replies] == ["tcp-0", "tcp-1", "tcp-2"]
        assert all(r.status == 200 for r in replies)
    finally:
        writer.close()


async def test_oversize_tcp_message_closes_that_connection_only(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _sip_port(server))
    writer.write(_request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: 900000"))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
    writer.close()
    reply = await _udp_exchange(_sip_port(server), _request("OPTIONS", call_id="after"))
    assert reply.status == 200


async def test_garbage_flood_does_not_disturb_a_live_call(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.post("/rest-api/call/startup", loopback_call(callee, "g1", "gs1"))
    await rest.wait_status("g1", {"ESTABLISHED"})
    stream = server.gateway.streams["gs1"]
    port = _sip_port(server)
    rng = random.Random(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seeds = [_request("INVITE"), _request("BYE", call_id="g-x"), b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"]
    try:
        for i in range(5000):
            kind = i % 3
            if kind == 0:
                data = os.urandom(rng.randrange(1, 1400))
            elif kind == 1:
                seed = bytearray(rng.choice(seeds))
                for _ in range(rng.randrange(1, 8)):
                    seed[rng.randrange(len(seed))] = rng.randrange(256)
                data = bytes(seed)
            else:
                data = rng.choice(seeds)[: rng.randrange(1, 60)]
            sock.sendto(data, ("127.0.0.1", port))
            if i % 500 == 0:
                await asyncio.sleep(0)
    finally:
        sock.close()
    await real_frames_grow(stream, "video")  # the far end's media still flows
    code, calls = await rest.find_call("g1")
    assert code == 200 and calls[0]["status"] == "ESTABLISHED"
    assert server.gateway.ua is not None and server.gateway.ua.transport.stats.malformed > 0


async def test_our_2xx_to_a_reinvite_is_retransmitted_until_acked(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.post("/rest-api/call/startup", loopback_call(callee, "x1", "xs1"))
    await rest.wait_status("x1", {"ESTABLISHED"})
    sip = server.gateway.calls["x1"].sip
    assert sip is not None
    sdp = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0\r\na=sendonly\r\n")
    reinvite = (
        f"INVITE sip:caller@127.0.0.1:{_sip_port(server)} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKreinv1\r\n"
        f"From: <sip:demo@127.0.0.1>;tag={sip.remote_tag}\r\nTo: <sip:caller@127.0.0.1>;tag={sip.local_tag}\r\n"
        f"Call-ID: {sip.sip_call_id}\r\nCSeq: 77 INVITE\r\nContact: <sip:demo@127.0.0.1:9>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        await loop.sock_sendto(sock, reinvite, ("127.0.0.1", _sip_port(server)))
        answers = []
        deadline = loop.time() + 1.0  # T1 is 100 ms in tests: several resends within a second
        while loop.time() < deadline:
            try:
                answers.append(SipMessage.parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)))
            except asyncio.TimeoutError:
                break
        assert len(answers) >= 3 and all(a.status == 200 for a in answers)
        assert b"a=recvonly" in answers[0].body  # sendonly offered: hold answered recvonly
        await rest.wait_status("x1", {"HOLD"})
        ack = reinvite.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"CSeq: 77 INVITE", b"CSeq: 77 ACK")
        await loop.sock_sendto(sock, ack, ("127.0.0.1", _sip_port(server)))
        await asyncio.sleep(0.1)
        while True:  # drop what was already in flight
            try:
                sock.recv(65535)
            except BlockingIOError:
                break
        # No more resends after the ACK: the next one would have come within
        # T2 (the longest interval between resends).
        transport = server.gateway.ua.transport if server.gateway.ua is not None else None
        assert transport is not None
        await asyncio.sleep(transport.t2 + 0.5)
        with pytest.raises(BlockingIOError):
            sock.recv(65535)
    finally:
        sock.close()
