"""Load generator of the loopback reference (test_bench_media.py), run as
its own process on the load core: for each line ``PORT`` read on stdin it
sends the whole media_sequence to 127.0.0.1:PORT, then answers ``sent``."""

from __future__ import annotations

import socket
import sys

from media_sequence import PACKETS


def main() -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for line in sys.stdin:
        addr = ("127.0.0.1", int(line))
        for p in PACKETS:
            tx.sendto(p, addr)
        print("sent", flush=True)


if __name__ == "__main__":
    main()
