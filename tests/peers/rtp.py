"""RTP helpers: replay pcaps as a live RTP sender, and receive RTP.

sipp 3.6.1 runs at most ONE ``play_pcap_*`` per call (starting a second one
cancels the first: "If a media_thread is already active, kill it"), so it
cannot send audio and video at the same time.  The callee's media therefore
comes from :class:`RtpPlayer` here: sipp does the signalling and tells the
player (via ``<exec command=...>`` writing a small file in its work dir) the
caller's RTP address/ports when the ACK arrives, and when the call ends.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .media import read_pcap, rtp_parse
from .util import LOOPBACK


@dataclass
class _Track:
    name: str
    sock: socket.socket
    dest: Tuple[str, int]
    times: List[float]          # offsets (s) from the first packet
    packets: List[bytearray]
    span_s: float               # duration of one loop
    seq_span: int               # seq increment per loop
    ts_span: int                # RTP ts increment per loop
    sent: int = 0


def _load_track(name: str, pcap: os.PathLike | str, sock: socket.socket, dest) -> _Track:
    pk = read_pcap(pcap)
    if not pk:
        raise ValueError(f"empty pcap {pcap}")
    t0 = pk[0].ts
    times = [p.ts - t0 for p in pk]
    rtps = [rtp_parse(p.payload) for p in pk]
    gaps = [b - a for a, b in zip(times, times[1:]) if b - a > 0.001]
    gap = statistics.median(gaps) if gaps else 0.02
    tsd = [(b.ts - a.ts) & 0xFFFFFFFF for a, b in zip(rtps, rtps[1:]) if b.ts != a.ts]
    tstep = statistics.median(tsd) if tsd else 0
    return _Track(
        name=name, sock=sock, dest=dest, times=times,
        packets=[bytearray(p.payload) for p in pk],
        span_s=times[-1] + gap,
        seq_span=len(pk),
        ts_span=((rtps[-1].ts - rtps[0].ts) & 0xFFFFFFFF) + int(tstep),
    )


class RtpPlayer:
    """Send the RTP of pcaps to a destination with the capture's timing.

    ``tracks``: {"audio": (pcap, local_port, (dest_ip, dest_port)), "video": ...}.
    Each track is sent from its own UDP socket bound to 127.0.0.1:local_port
    (symmetric RTP).  With ``loop`` the pcaps repeat seamlessly (sequence
    numbers and timestamps continue) until :meth:`stop`.
    """

    def __init__(self, tracks: Dict[str, tuple], loop: bool = True,
                 sockets: Optional[Dict[str, socket.socket]] = None) -> None:
        self.loop = loop
        self._tracks: List[_Track] = []
        for name, (pcap, local_port, dest) in tracks.items():
            if dest is None or not dest[1]:
                continue
            s = (sockets or {}).get(name)
            if s is None:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((LOOPBACK, local_port or 0))
            self._tracks.append(_load_track(name, pcap, s, tuple(dest)))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.started_at: Optional[float] = None

    def start(self) -> "RtpPlayer":
        self._thread = threading.Thread(target=self._run, name="rtp-player", daemon=True)
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def sent(self) -> Dict[str, int]:
        return {t.name: t.sent for t in self._tracks}

    def _run(self) -> None:
        # merge tracks into one schedule; each loop re-stamps seq/ts
        idx = {id(t): 0 for t in self._tracks}
        loops = {id(t): 0 for t in self._tracks}
        base = time.monotonic()
        while not self._stop.is_set():
            # next due packet across tracks
            best = None
            for t in self._tracks:
                i = idx[id(t)]
                if i >= len(t.packets):
                    if not self.loop:
                        continue
                    idx[id(t)] = i = 0
                    loops[id(t)] += 1
                due = loops[id(t)] * t.span_s + t.times[i]
                if best is None or due < best[0]:
                    best = (due, t, i)
            if best is None:
                return
            due, t, i = best
            wait = base + due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            pkt = t.packets[i]
            n = loops[id(t)]
            if n:
                pkt = bytearray(pkt)
                seq = (int.from_bytes(pkt[2:4], "big") + n * t.seq_span) & 0xFFFF
                ts = (int.from_bytes(pkt[4:8], "big") + n * t.ts_span) & 0xFFFFFFFF
                pkt[2:4] = seq.to_bytes(2, "big")
                pkt[4:8] = ts.to_bytes(4, "big")
            try:
                t.sock.sendto(pkt, t.dest)
                t.sent += 1
            except OSError:
                pass  # e.g. ICMP port unreachable reported on a later send
            idx[id(t)] = i + 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for t in self._tracks:
            t.sock.close()


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


class CallMediaController:
    """Watches a sipp work dir for ``media_start`` / ``media_stop`` files written
    by the scenario's ``<exec command>`` and runs an :class:`RtpPlayer`
    accordingly.  ``media_start`` holds "ip=<ip> audio=<port> video=<port>" of the
    caller's SDP offer.  Also receives (and counts) what the caller sends to
    our RTP/RTCP ports."""

    def __init__(self, ctrl_dir: Path, audio_pcap, video_pcap, audio_port: int, video_port: int,
                 loop: bool = True, alive: Optional[Callable[[], bool]] = None) -> None:
        self.ctrl_dir = Path(ctrl_dir)
        self.audio_pcap, self.video_pcap = audio_pcap, video_pcap
        self.audio_port, self.video_port = audio_port, video_port
        self.loop = loop
        self.alive = alive or (lambda: True)
        self.remote: Optional[Tuple[str, Optional[int], Optional[int]]] = None
        self.player: Optional[RtpPlayer] = None
        # our RTP sockets (used for sending too) + RTCP sinks on port+1
        self.audio_sink = RtpSink(audio_port)
        self.video_sink = RtpSink(video_port)
        self.audio_rtcp_sink = RtpSink(audio_port + 1)
        self.video_rtcp_sink = RtpSink(video_port + 1)
        self.media_started = threading.Event()
        self.media_stopped = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-media", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start_f = self.ctrl_dir / "media_start"
        stop_f = self.ctrl_dir / "media_stop"
        while not self._stop.is_set():
            if self.player is None and start_f.exists():
                kv = dict(w.split("=", 1) for w in start_f.read_text().split() if "=" in w)
                ip = kv.get("ip") or LOOPBACK
                a = int(kv["audio"]) if kv.get("audio", "").isdigit() else None
                v = int(kv["video"]) if kv.get("video", "").isdigit() else None
                self.remote = (ip, a, v)
                tracks = {}
                if a:
                    tracks["audio"] = (self.audio_pcap, self.audio_port, (ip, a))
                if v:
                    tracks["video"] = (self.video_pcap, self.video_port, (ip, v))
                self.player = RtpPlayer(
                    tracks, loop=self.loop,
                    sockets={"audio": _dup(self.audio_sink.sock), "video": _dup(self.video_sink.sock)},
                ).start()
                self.media_started.set()
            if self.player is not None and (stop_f.exists() or not self.alive()):
                self.player.stop()
                self.media_stopped.set()
                return
            if self.player is None and not self.alive():
                return
            time.sleep(0.01)

    def sent(self) -> Dict[str, int]:
        return self.player.sent() if self.player else {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        if self.player is not None:
            self.player.stop()
        for s in (self.audio_sink, self.video_sink, self.audio_rtcp_sink, self.video_rtcp_sink):
            s.close()


def _dup(sock: socket.socket) -> socket.socket:
    """A second Python socket object on the same fd-bound port (so sender and
    receiver share the port: symmetric RTP)."""
    return socket.socket(fileno=os.dup(sock.fileno()))
