"""A bad network for a real peer's RTP, on any kernel: this machine's kernel
has no netem qdisc (``tc qdisc add ... netem`` answers "Specified qdisc kind
is unknown", and there are no modules to load), so instead of impairing a
link in a network namespace, a relay in front of the peer loses, delays and
reorders what it sends us.
"""

from __future__ import annotations

import heapq
import random
import re
import socket
import threading
import time


class ImpairingSipRelay:
    """A SIP + RTP relay in front of a UAS, for kernels without netem: the
    caller sends its INVITE here; the relay forwards it to the UAS with the
    offer's m= ports replaced by relay sockets, so the UAS's RTP/RTCP toward
    the caller crosses the relay, which drops ``loss`` of it and delays each
    packet by ``delay_s`` ± ``jitter_s`` (uniform; packets overtake each other,
    i.e. arrive reordered). Responses go back to the caller; in-dialog
    requests (ACK, BYE) go directly between the two, as their Contacts say.

        relay = ImpairingSipRelay(("127.0.0.1", uas_port), loss=0.01, delay_s=0.03, jitter_s=0.01)
        relay.start(); ... call sip:bob@127.0.0.1:<relay.port> ...; relay.stop()
        relay.forwarded, relay.dropped, relay.reordered
    """

    def __init__(self, target: tuple[str, int], *, loss: float = 0.01, delay_s: float = 0.03,
                 jitter_s: float = 0.01, seed: int = 7) -> None:
        self.target = target
        self.loss, self.delay_s, self.jitter_s = loss, delay_s, jitter_s
        self.random = random.Random(seed)
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.port = self.sip.getsockname()[1]
        self.caller: tuple[str, int] | None = None
        self.media: dict[object, tuple[tuple[str, int], list]] = {}  # socket -> (caller addr, [uas addr])
        self.forwarded = self.dropped = self.reordered = 0
        self._last_sent_seq: dict[object, int] = {}
        self._queue: list[tuple[float, int, object, bytes, tuple[str, int]]] = []
        self._n = 0
        self._stop = False
        self._thread = None

    def _rewrite_offer(self, msg: bytes) -> bytes:
        head, sep, body = msg.partition(b"\r\n\r\n")
        if not sep or b"\r\nm=" not in b"\r\n" + body:
            return msg
        text = body.decode()
        addr = re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1)

        def relay_sockets(m: re.Match) -> str:
            caller_port = int(m.group(2))
            ports = []
            for port in (caller_port, caller_port + 1):  # RTP, RTCP
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", 0))
                self.media[sock] = ((addr, port), [])
                ports.append(sock.getsockname()[1])
            # a=rtcp: the relay's RTCP socket is not necessarily RTP + 1
            return f"m={m.group(1)} {ports[0]}{m.group(3)}\r\na=rtcp:{ports[1]}"

        new = re.sub(r"^m=(audio|video) (\d+)([^\r\n]*)", relay_sockets, text, flags=re.M).encode()
        head = re.sub(rb"(?im)^(Content-Length|l):\s*\d+", b"Content-Length: " + str(len(new)).encode(), head)
        return head + sep + new

    def start(self) -> ImpairingSipRelay:

        self._thread = threading.Thread(target=self._run, name="impairing-relay", daemon=True)
        self._thread.start()
        return self

    def _send_later(self, sock: object, data: bytes, to: tuple[str, int]) -> None:
        import time

        if self.random.random() < self.loss:
            self.dropped += 1
            return
        due = time.monotonic() + self.delay_s + self.random.uniform(-self.jitter_s, self.jitter_s)
        self._n += 1
        heapq.heappush(self._queue, (due, self._n, sock, data, to))

    def _run(self) -> None:
        import select

        while not self._stop:
            socks = [self.sip, *self.media]
            now = time.monotonic()
            timeout = max(0.0, min(0.05, self._queue[0][0] - now)) if self._queue else 0.05
            readable, _, _ = select.select(socks, [], [], timeout)
            for s in readable:
                try:
                    data, src = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.sip:
                    if data.startswith(b"SIP/2.0"):
                        if self.caller:
                            self.sip.sendto(data, self.caller)
                    else:
                        self.caller = src
                        if data.startswith(b"INVITE "):
                            data = self._rewrite_offer(data)
                        self.sip.sendto(data, self.target)
                    continue
                caller, uas = self.media[s]
                if src == caller:  # the caller's own packets (RTCP, latched RTP) back to the UAS
                    if uas:
                        s.sendto(data, uas[0])
                    continue
                uas[:] = [src]
                self._send_later(s, data, caller)
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, to = heapq.heappop(self._queue)
                if len(data) >= 12 and not 72 <= data[1] & 0x7F <= 76:  # RTP, not RTCP
                    seq = int.from_bytes(data[2:4], "big")
                    last = self._last_sent_seq.get(sock)
                    if last is not None and ((seq - last) & 0xFFFF) > 0x8000:
                        self.reordered += 1
                    self._last_sent_seq[sock] = seq if last is None or ((seq - last) & 0xFFFF) < 0x8000 else last
                try:
                    sock.sendto(data, to)
                    self.forwarded += 1
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=2)
        for s in [self.sip, *self.media]:
            s.close()
