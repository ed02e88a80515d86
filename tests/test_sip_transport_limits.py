"""The SIP port's limits against clients that hold it without talking:
a cap on inbound TCP connections, timeouts for a connection that never
sends, for a message dribbled a byte at a time and for idling, our own
connections kept while in use, and a UDP transaction that survives an ICMP
port unreachable."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest
from sipstream._core import SipMessage
from sipstream.sip.transport import Endpoint, SipTransport, new_branch

from .peers.util import free_port

# Linux's value; the socket module names it only on some Pythons.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)


def _options(call_id: str, via_port: int = 9) -> bytes:
    return (
        f"OPTIONS sip:sipstream@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{via_port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:sipstream@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _ok(request: SipMessage) -> SipMessage:
    headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "Call-ID", "CSeq")]
    headers.append(("To", (request.header("To") or "") + ";tag=answer"))
    return SipMessage.response(200, "OK", headers)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _open(
    max_tcp_connections: int = 1000,
    tcp_first_message_timeout: float = 60.0,
    tcp_message_timeout: float = 60.0,
    tcp_idle_timeout: float = 60.0,
    tcp_outbound_idle_timeout: float | None = None,
) -> SipTransport:
    """A SIP port on loopback that answers every request with 200."""
    transport = await SipTransport.open(
        "127.0.0.1", 0, 0.25, 8.0,
        max_tcp_connections=max_tcp_connections,
        tcp_first_message_timeout=tcp_first_message_timeout,
        tcp_message_timeout=tcp_message_timeout,
        tcp_idle_timeout=tcp_idle_timeout,
        tcp_outbound_idle_timeout=tcp_outbound_idle_timeout,
    )

    async def answer(request: SipMessage, source: Endpoint) -> None:
        transport.send(_ok(request), source)

    transport.on_request = answer
    return transport


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection within ``within`` seconds
    (whatever it still sends is read and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            if not await asyncio.wait_for(reader.read(65536), left):
                return True
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def _options_over_tcp(port: int, call_id: str) -> SipMessage:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_options(call_id))
        await writer.drain()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                raise ConnectionError("closed before answering")
            data += chunk
        return SipMessage.parse(data)
    finally:
        writer.close()


@pytest.fixture
async def fd_baseline() -> AsyncIterator[int]:
    yield _open_fds()


async def test_connections_beyond_the_cap_are_closed_at_once_and_fds_do_not_grow(fd_baseline: int) -> None:
    transport = await _open(max_tcp_connections=20)
    port = transport.local_address.port
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(40):
            clients.append(await asyncio.open_connection("127.0.0.1", port))
        closed = await asyncio.gather(*(_closed_by_server(r, 5.0) for r, _ in clients))
        assert sum(closed) == 20  # the excess, within seconds rather than at any timeout
        assert transport.stats.tcp_rejected == 20
        # Our 40 client sockets and the 20 connections the server kept: the
        # server's side of the 20 it refused is gone, not waiting for a timer.
        assert _open_fds() <= fd_baseline + 2 + 40 + 20 + 4
        # Once the idle clients leave, a fresh connection is served again.
        for _, writer in clients:
            writer.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                reply = await _options_over_tcp(port, "after-cap")
                break
            except ConnectionError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert reply.status == 200 and reply.call_id == "after-cap"
    finally:
        for _, writer in clients:
            writer.close()
        transport.close()
    await asyncio.sleep(0.2)  # closed sockets are released on the next loop turns
    assert _open_fds() <= fd_baseline


async def test_a_slowloris_message_is_closed_after_the_message_timeout() -> None:
    transport = await _open(tcp_message_timeout=2.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", transport.local_address.port)
    try:
        # A real first message, so only the message timeout can apply.
        writer.write(_options("slow-0"))
        await writer.drain()
        first = await asyncio.wait_for(reader.read(65536), 5)
        assert SipMessage.parse(first).status == 200
        closed = asyncio.create_task(_closed_by_server(reader, 30.0))
        header = _options("slow-1")
        sent = 0
        for byte in header[:20]:  # 20 s of dribbling, the header never ends
            if closed.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(1.0)
        assert await closed
        assert sent < 20, "still open after 20 s of a header dribbled byte by byte"
        assert transport.stats.tcp_timeouts == 1
    finally:
        writer.close()
        transport.close()


async def test_a_connection_that_never_sends_is_closed_after_the_first_message_timeout() -> None:
    transport = await _open(tcp_first_message_timeout=2.0, tcp_idle_timeout=60.0)
    port = transport.local_address.port
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
    talker_reader, talker = await asyncio.open_connection("127.0.0.1", port)
    try:
        talker.write(_options("talker"))
        await talker.drain()
        assert SipMessage.parse(await asyncio.wait_for(talker_reader.read(65536), 5)).status == 200
        assert await _closed_by_server(silent_reader, 20.0)
        # The connection that sent a message is under the idle timeout instead.
        assert not await _closed_by_server(talker_reader, 1.0)
        assert transport.stats.tcp_timeouts == 1
    finally:
        silent.close()
        talker.close()
        transport.close()


class _TcpSink:
    """A TCP peer that accepts and never answers; hands out each connection."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            await self.accepted.put(reader)

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _request_to(port: int, local_port: int) -> SipMessage:
    headers = [
        ("Via", f"SIP/2.0/TCP 127.0.0.1:{local_port};branch={new_branch()}"),
        ("From", "<sip:sipstream@127.0.0.1>;tag=s1"),
        ("To", f"<sip:peer@127.0.0.1:{port}>"),
        ("Call-ID", f"out-{port}"),
        ("CSeq", "1 OPTIONS"),
        ("Max-Forwards", "70"),
    ]
    return SipMessage.request("OPTIONS", f"sip:peer@127.0.0.1:{port}", headers)


async def test_our_own_connection_is_not_cut_by_the_inbound_timeouts() -> None:
    transport = await _open(tcp_first_message_timeout=0.5, tcp_idle_timeout=0.5, tcp_message_timeout=0.5)
    sink = _TcpSink()
    port = await sink.start()
    try:
        transport.send(_request_to(port, transport.local_address.port), Endpoint("127.0.0.1", port, "TCP"))
        peer = await asyncio.wait_for(sink.accepted.get(), 5)
        # The peer never sends anything back: an inbound connection would be
        # closed after 0.5 s, ours stays (the proxy may call us over it later).
        assert not await _closed_by_server(peer, 3.0)
        assert transport.stats.tcp_timeouts == 0
    finally:
        transport.close()
        await sink.close()


async def test_our_own_idle_connection_closes_only_when_no_call_holds_it() -> None:
    transport = await _open(tcp_outbound_idle_timeout=0.5)
    sink = _TcpSink()
    port = await sink.start()
    destination = Endpoint("127.0.0.1", port, "TCP")
    try:
        transport.hold_connection(destination)
        transport.send(_request_to(port, transport.local_address.port), destination)
        peer = await asyncio.wait_for(sink.accepted.get(), 5)
        assert not await _closed_by_server(peer, 3.0)  # six idle timeouts, held by a call
        transport.release_connection(destination)
        assert await _closed_by_server(peer, 10.0)
        assert transport.stats.tcp_timeouts == 1
    finally:
        transport.close()
        await sink.close()


class _Answer200(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        assert self.transport is not None
        self.transport.sendto(_ok(SipMessage.parse(data)).to_bytes(), addr)


async def test_icmp_port_unreachable_does_not_end_the_transaction() -> None:
    transport = await _open()
    loop = asyncio.get_running_loop()
    port = free_port(udp=True, tcp=False)  # nobody listens there until later
    # Linux reports ICMP errors on an unconnected UDP socket only with
    # IP_RECVERR; set it so the refusal surfaces, as it does on other systems.
    assert transport._udp is not None
    sock = transport._udp.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{transport.local_address.port};branch={new_branch()}"),
        ("From", "<sip:sipstream@127.0.0.1>;tag=i1"),
        ("To", f"<sip:peer@127.0.0.1:{port}>"),
        ("Call-ID", "icmp-1"),
        ("CSeq", "1 OPTIONS"),
        ("Max-Forwards", "70"),
    ]
    request = SipMessage.request("OPTIONS", f"sip:peer@127.0.0.1:{port}", headers)
    pending = asyncio.create_task(transport.request(request, Endpoint("127.0.0.1", port, "UDP")))
    responder: asyncio.DatagramTransport | None = None
    try:
        deadline = loop.time() + 5
        while transport.stats.udp_errors == 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert transport.stats.udp_errors > 0, "no ICMP port unreachable reached the socket"
        assert not pending.done()
        # Clearing IP_RECVERR drops the queued errors, which would otherwise
        # keep the socket readable.
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)
        await asyncio.sleep(1.0)
        assert not pending.done()
        answer = _Answer200()
        responder, _ = await loop.create_datagram_endpoint(lambda: answer, local_addr=("127.0.0.1", port))
        response = await asyncio.wait_for(pending, 15)
        assert response.status == 200 and response.call_id == "icmp-1"
        assert answer.requests >= 1  # a retransmission reached the late responder
    finally:
        pending.cancel()
        if responder is not None:
            responder.close()
        transport.close()
