"""RTP helpers: receive RTP/RTCP on a loopback UDP port.

bob's media is sent by sipp itself (see tests/peers/sipp.py); sipp binds no
RTCP ports, so :class:`RtcpSinks` records what the caller sends to bob's
RTCP ports (RTP port + 1), e.g. PLI/FIR.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, List, Tuple

from .media import rtp_parse
from .util import LOOPBACK


class RtpSink:
    """Receive UDP on 127.0.0.1:port in a thread; keeps (arrival_time, src, data)."""

    def __init__(self, port: int = 0, host: str = LOOPBACK) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.packets: List[Tuple[float, Tuple[str, int], bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-sink-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.packets.append((time.monotonic(), addr, data))

    def payloads(self) -> List[bytes]:
        return [d for _, _, d in list(self.packets)]

    def rtp(self):
        """Received packets parsed as RTP (RTCP/non-RTP skipped)."""
        out = []
        for d in self.payloads():
            if len(d) >= 12 and d[0] >> 6 == 2 and not (200 <= d[1] <= 206):
                out.append(rtp_parse(d))
        return out

    def rtcp(self) -> List[bytes]:
        return [d for d in self.payloads() if len(d) >= 8 and d[0] >> 6 == 2 and 200 <= d[1] <= 206]

    def wait_for(self, pred: Callable[["RtpSink"], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return True
            time.sleep(0.05)
        return pred(self)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RtcpSinks:
    """What a caller sends to a callee's RTCP ports: ``audio_rtcp_sink`` on
    ``audio_port + 1`` and ``video_rtcp_sink`` on ``video_port + 1``."""

    def __init__(self, audio_port: int, video_port: int) -> None:
        self.audio_rtcp_sink = RtpSink(audio_port + 1)
        try:
            self.video_rtcp_sink = RtpSink(video_port + 1)
        except BaseException:  # noqa: B036 - don't leak the first sink
            self.audio_rtcp_sink.close()
            raise

    def close(self) -> None:
        self.audio_rtcp_sink.close()
        self.video_rtcp_sink.close()
