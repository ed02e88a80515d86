"""Small helpers shared by the peers (ports, process handling, waiting)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()


def which_or_none(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def _port_free(port: int, udp: bool = True, tcp: bool = True) -> bool:
    socks = []
    try:
        if udp:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((LOOPBACK, port))
        if tcp:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


# Ports handed to peers and test servers come from this pool: below the media
# ranges test servers get (10000-32600, tests/conftest.py) and below the
# kernel's ephemeral range (32768-60999), so that no bind to port 0 and no
# outgoing connection takes one between the moment it is chosen here and
# the moment its user binds it. The pool is walked in turn from a random
# start; a port comes back only after a whole cycle.
POOL_FIRST, POOL_END = 6000, 10000
_RESERVED = {8080, 8082, 8443, 9091}  # sipstream's default ports
_cursor = POOL_FIRST + random.randrange(POOL_END - POOL_FIRST)


def _next_block(count: int, align: int) -> range:
    global _cursor
    start = -(-_cursor // align) * align
    if start + count > POOL_END:
        start = POOL_FIRST  # a new cycle: what was handed out a cycle ago is long closed
        _handed_out.clear()
    _cursor = start + count
    return range(start, start + count)


def free_port(udp: bool = True, tcp: bool = True) -> int:
    """A port on 127.0.0.1 that is currently free for UDP and/or TCP, from
    the pool above. Ports already handed out by this process are not
    returned again within a cycle, so several peers in one test never
    collide with each other."""
    for _ in range(POOL_END - POOL_FIRST):
        (port,) = _next_block(1, 1)
        if port in _handed_out or port in _RESERVED:
            continue
        if _port_free(port, udp=udp, tcp=tcp):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def free_udp_port_pair(count: int = 4) -> int:
    """An even UDP port ``p`` such that p .. p+count-1 are all free
    (for RTP/RTCP of audio + video: p, p+1, p+2, p+3)."""
    for _ in range((POOL_END - POOL_FIRST) // count):
        block = _next_block(count, 2)
        if any(p in _handed_out or p in _RESERVED for p in block):
            continue
        if all(_port_free(p, udp=True, tcp=False) for p in block):
            _handed_out.update(block)
            return block[0]
    raise RuntimeError("no free UDP port range found")


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def terminate_process(proc: subprocess.Popen | None, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop ``proc`` (and its process group if it leads one): signal, wait, then SIGKILL."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    own_group = pgid is not None and pgid == proc.pid

    def _signal(s: int) -> None:
        try:
            if own_group:
                os.killpg(pgid, s)
            else:
                proc.send_signal(s)
        except ProcessLookupError:
            pass

    _signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(signal.SIGKILL)
        proc.wait(timeout=5)
    if own_group:
        # reap leftovers (children of a process that itself already exited)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return proc.returncode


def sip_options_ping(host: str, port: int, timeout: float = 0.3) -> str | None:
    """Send one SIP OPTIONS over UDP to host:port; return the status line or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, 0))
        lport = s.getsockname()[1]
        tag = f"{time.monotonic_ns():x}"
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{lport};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{LOOPBACK}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: probe-{tag}@{LOOPBACK}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (host, port))
        data, _ = s.recvfrom(65535)
        return data.split(b"\r\n", 1)[0].decode(errors="replace")
    except (TimeoutError, ConnectionRefusedError, OSError):
        return None
    finally:
        s.close()


def sip_request(host: str, port: int, method: str, ruri: str, from_uri: str, to_uri: str,
                transport: str = "udp", timeout: float = 2.0, extra_headers: str = "") -> str | None:
    """Send one out-of-dialog SIP request over UDP or TCP; return the first
    final (>=200) response as text (or the last provisional one / None)."""
    tag = f"{time.monotonic_ns():x}"
    if transport == "tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((host, port))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.bind((LOOPBACK, 0))
    try:
        lport = s.getsockname()[1]
        msg = (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {LOOPBACK}:{lport};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{from_uri}>;tag={tag}\r\n"
            f"To: <{to_uri}>\r\n"
            f"Call-ID: {tag}@{LOOPBACK}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:probe@{LOOPBACK}:{lport}>\r\n"
            f"{extra_headers}"
            "Content-Length: 0\r\n\r\n"
        )
        if transport == "tcp":
            s.sendall(msg.encode())
        else:
            s.sendto(msg.encode(), (host, port))
        last = None
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except TimeoutError:
                break
            if not data:
                break
            if transport == "tcp":
                buf += data
                if b"\r\n\r\n" not in buf:
                    continue
                data, buf = buf, b""
            text = data.decode(errors="replace")
            last = text
            code = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0 ") else 0
            if code >= 200:
                return text
        return last
    finally:
        s.close()
