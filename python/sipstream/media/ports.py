"""Media port range (``media_port_from``..``media_port_to``): each call takes
four consecutive ports starting at an even one (audio RTP/RTCP, video RTP/RTCP)."""

from __future__ import annotations

import math
import random
import socket


class PortRangeExhausted(Exception):
    """Every port block of the media range is in use."""


class PortAllocator:
    def __init__(self, first: int, last: int, host: str, rng: random.Random | None = None) -> None:
        self.first = first + (first % 2)
        self.last = last
        self.host = host
        self._used: set[int] = set()
        # Blocks in order made the next call's ports easy to guess, and a
        # stranger who knows a live call's port can send it RTP: the choice
        # is random (OS entropy unless a test passes its own generator).
        self._rng = rng if rng is not None else random.SystemRandom()

    @property
    def blocks(self) -> int:
        """How many 4-port blocks the range holds."""
        return max(0, (self.last - self.first + 1) // 4)

    def allocate(self) -> list[socket.socket]:
        """Bind four UDP sockets on consecutive ports of a random free block;
        skips ports that other programs hold. Visits each block at most once
        (a random start and a random step coprime with the block count walk
        them all), so it ends and raises only when no block is free. The
        caller owns the sockets."""
        count = self.blocks
        start = self._rng.randrange(count) if count else 0
        step = self._rng.randrange(1, count) if count > 1 else 1
        while math.gcd(step, count) != 1:
            step -= 1  # reaches 1 at worst
        for i in range(count):
            base = self.first + 4 * ((start + i * step) % count)
            if base in self._used:
                continue
            sockets = self._bind(base)
            if sockets is not None:
                self._used.add(base)
                return sockets
        raise PortRangeExhausted(f"no free media ports in {self.first}..{self.last}")

    def _bind(self, base: int) -> list[socket.socket] | None:
        """The block's four sockets, or None when another program holds one."""
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((self.host, port))
        except OSError:
            for sock in sockets:
                sock.close()
            return None
        return sockets

    def release(self, base: int) -> None:
        self._used.discard(base)

    @property
    def in_use(self) -> int:
        return len(self._used)
