"""RTP helpers: receive RTP/RTCP on a loopback UDP port.

bob's media is sent by sipp itself (see tests/peers/sipp.py); sipp binds no
RTCP ports, so :class:`MediaSinks` records what the caller sends to bob's
RTCP ports (RTP port + 1), e.g. PLI/FIR, and with ``media="sink"`` also
bob's RTP ports (what the caller sends: RFC 4733 events, ...).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

from .media import rtp_parse
from .util import LOOPBACK

RTCP_RTPFB = 205  # transport-layer feedback (RFC 4585), e.g. FMT 1 generic NACK
RTCP_PSFB = 206  # payload-specific feedback: FMT 1 PLI (RFC 4585), FMT 4 FIR (RFC 5104)


def rtcp_feedback(packets: Iterable[bytes]) -> list[tuple[int, int, int, int]]:
    """Every feedback message (PT 205/206) inside the given RTCP datagrams,
    each a compound packet walked by its length fields (RFC 3550 §6.1), as
    ``(pt, fmt, sender_ssrc, media_ssrc)``.  A PLI is ``(206, 1, ...)``; the
    media SSRC is the stream the sender asks about.  For a FIR (206, 4) the
    header's media SSRC is 0 and the FCI's first SSRC is returned instead
    (RFC 5104 §4.3.1.2).  Non-RTCP datagrams are skipped; a truncated or
    malformed compound raises ValueError saying where."""
    out: list[tuple[int, int, int, int]] = []
    for data in packets:
        if len(data) < 8 or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
            continue
        offset = 0
        while offset < len(data):
            if len(data) - offset < 4:
                raise ValueError(f"RTCP: {len(data) - offset} stray bytes at offset {offset}")
            b0, pt, words = struct.unpack_from("!BBH", data, offset)
            size = (words + 1) * 4
            if b0 >> 6 != 2:
                raise ValueError(f"RTCP: version {b0 >> 6} at offset {offset}")
            if offset + size > len(data):
                raise ValueError(f"RTCP: PT {pt} at offset {offset} claims {size} bytes, {len(data) - offset} left")
            if pt in (RTCP_RTPFB, RTCP_PSFB):
                if size < 12:
                    raise ValueError(f"RTCP: feedback PT {pt} at offset {offset} is only {size} bytes")
                sender, media = struct.unpack_from("!II", data, offset + 4)
                fmt = b0 & 0x1F
                if pt == RTCP_PSFB and fmt == 4 and size >= 20:
                    media = struct.unpack_from("!I", data, offset + 12)[0]
                out.append((pt, fmt, sender, media))
            offset += size
    return out


class RtpSink:
    """Receive UDP on 127.0.0.1:port in a thread; keeps (arrival_time, src, data)."""

    def __init__(self, port: int = 0, host: str = LOOPBACK) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.packets: list[tuple[float, tuple[str, int], bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-sink-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.packets.append((time.monotonic(), addr, data))

    def payloads(self) -> list[bytes]:
        return [d for _, _, d in list(self.packets)]

    def rtp(self):
        """Received packets parsed as RTP (RTCP/non-RTP skipped)."""
        out = []
        for d in self.payloads():
            if len(d) >= 12 and d[0] >> 6 == 2 and not (200 <= d[1] <= 206):
                out.append(rtp_parse(d))
        return out

    def rtcp(self) -> list[bytes]:
        return [d for d in self.payloads() if len(d) >= 8 and d[0] >> 6 == 2 and 200 <= d[1] <= 206]

    def feedback(self) -> list[tuple[float, tuple[int, int, int, int]]]:
        """(arrival time, :func:`rtcp_feedback` entry) of every feedback message received."""
        return [(t, fb) for t, _, d in list(self.packets) for fb in rtcp_feedback([d])]

    def wait_for(self, pred: Callable[[RtpSink], bool], timeout: float) -> bool:
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


class MediaSinks:
    """The test's sockets at a callee's advertised media ports.

    ``audio_rtcp_sink`` on ``audio_port + 1`` and ``video_rtcp_sink`` on
    ``video_port + 1`` always; with ``rtp=True`` also ``audio_sink`` on
    ``audio_port`` and ``video_sink`` on ``video_port`` (else None: sipp owns
    those ports and sends bob's media from them).  ``changed`` is a second
    MediaSinks (rtp=True) where bob moves its media to (scenario
    ``uas_media_change``), else None."""

    def __init__(self, audio_port: int, video_port: int, rtp: bool = False) -> None:
        self.audio_port, self.video_port = audio_port, video_port
        self.changed: MediaSinks | None = None
        self._sinks: list[RtpSink] = []
        try:
            self.audio_sink = self._open(audio_port) if rtp else None
            self.audio_rtcp_sink = self._open(audio_port + 1)
            self.video_sink = self._open(video_port) if rtp else None
            self.video_rtcp_sink = self._open(video_port + 1)
        except BaseException:  # noqa: B036 - don't leak the sinks already bound
            self.close()
            raise

    def _open(self, port: int) -> RtpSink:
        s = RtpSink(port)
        self._sinks.append(s)
        return s

    def close(self) -> None:
        for s in self._sinks:
            s.close()
        self._sinks = []
        if self.changed is not None:
            self.changed.close()


class RtcpSinks(MediaSinks):
    """What a caller sends to a callee's RTCP ports: ``audio_rtcp_sink`` on
    ``audio_port + 1`` and ``video_rtcp_sink`` on ``video_port + 1``."""

    def __init__(self, audio_port: int, video_port: int) -> None:
        super().__init__(audio_port, video_port, rtp=False)
