"""Media port range (``media_port_from``..``media_port_to``): each call takes
four consecutive ports starting at an even one (audio RTP/RTCP, video RTP/RTCP)."""

from __future__ import annotations

import socket


class PortRangeExhausted(Exception):
    """Every port block of the media range is in use."""


class PortAllocator:
    def __init__(self, first: int, last: int, host: str) -> None:
        self.first = first + (first % 2)
        self.last = last
        self.host = host
        self._used: set[int] = set()
        self._next = self.first

    def allocate(self) -> list[socket.socket]:
        """Bind four UDP sockets on consecutive ports; skips ports that other
        programs hold. The caller owns the sockets."""
        span = self.last - self.first + 1
        for _ in range(max(1, span // 4)):
            base = self._next
            self._next += 4
            if self._next + 3 > self.last:
                self._next = self.first
            if base in self._used or base + 3 > self.last:
                continue
            sockets: list[socket.socket] = []
            try:
                for port in range(base, base + 4):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sockets.append(sock)
                    sock.bind((self.host, port))
            except OSError:
                for sock in sockets:
                    sock.close()
                continue
            self._used.add(base)
            return sockets
        raise PortRangeExhausted(f"no free media ports in {self.first}..{self.last}")

    def release(self, base: int) -> None:
        self._used.discard(base)

    @property
    def in_use(self) -> int:
        return len(self._used)
