"""Test media generated at test time, for sipp to send.

* :func:`make_h264_pcap` -- a moving test pattern encoded with libx264
  (constrained baseline, no B-frames, SPS/PPS in band before every IDR),
  packetized to RTP per RFC 6184 (single NAL unit / FU-A, PT 96, 90 kHz).
* :func:`make_pcmu_pcap` -- a sine tone, G.711 µ-law, 20 ms packets, PT 0.
* :func:`make_pcmu_raw` -- the same tone as raw µ-law bytes (no header): the
  file sipp's ``<exec rtp_stream="FILE,LOOPS,0"/>`` streams as PCMU.
* :func:`make_flash_beep_pcaps` -- A/V sync material: H.264 pcap of avcheck's
  flash pattern + PCMU pcap with a beep at every flash, aligned in pcap and RTP
  time (:func:`pcap_flash_beep_times` checks it).

The pcaps are classic pcap (linktype 1 = Ethernet, IPv4, UDP).  The readers
(:func:`read_pcap`, :func:`rtp_parse`, :func:`h264_depacketize`,
:func:`decode_h264_access_units`) are here so tests can check what they made,
and can check what sipstream itself emits.

Every frame of the pattern carries its frame number as a 16-bit code of
black/white 16x16 blocks on the top row (see :func:`read_frame_counter`), and
a bright vertical bar that moves 4 px per frame.

Nothing here imports sipstream.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

RTP_MTU_PAYLOAD = 1200          # max RTP payload (bytes) for the H.264 packetizer
H264_PT = 96
PCMU_PT = 0
VIDEO_CLOCK = 90000
AUDIO_CLOCK = 8000

# default addressing written into the pcaps (sipp rewrites ports/addresses)
PCAP_SRC = ("127.0.0.1", 7000)
PCAP_DST_AUDIO = ("127.0.0.1", 6000)
PCAP_DST_VIDEO = ("127.0.0.1", 6002)

# Every test source sends this picture: a size, rate and moving content that
# sipstream's generator (black 320x240 keyframes, 1 a second) never makes.
SOURCE_WIDTH, SOURCE_HEIGHT, SOURCE_FPS = 352, 288, 25

H264_PCAP_SSRC = 0x5EED0001  # the SSRC of make_h264_pcap's packets

COUNTER_BITS = 16
COUNTER_BLOCK = 16


# --------------------------------------------------------------------------
# pcap writing / reading
# --------------------------------------------------------------------------

def _ip_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _ip_aton(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


class PcapWriter:
    """Minimal classic-pcap writer: Ethernet/IPv4/UDP frames, µs timestamps."""

    def __init__(self, path: os.PathLike | str, src=PCAP_SRC, dst=PCAP_DST_AUDIO) -> None:
        self.f = open(path, "wb")
        self.src = src
        self.dst = dst
        self.ip_id = 0
        # magic, v2.4, thiszone, sigfigs, snaplen, linktype 1 (Ethernet)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def write(self, ts: float, payload: bytes) -> None:
        udp_len = 8 + len(payload)
        udp = struct.pack("!HHHH", self.src[1], self.dst[1], udp_len, 0) + payload
        ip_len = 20 + udp_len
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        iph = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, ip_len, self.ip_id, 0x4000, 64, 17, 0,
            _ip_aton(self.src[0]), _ip_aton(self.dst[0]),
        )
        iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
        eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
        frame = eth + iph + udp
        sec = int(ts)
        usec = int(round((ts - sec) * 1_000_000))
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
        self.f.write(frame)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class PcapPacket:
    ts: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes          # UDP payload


def read_pcap(path: os.PathLike | str) -> list[PcapPacket]:
    """Read a classic pcap (Ethernet or Linux SLL, IPv4, UDP); non-UDP is skipped."""
    out: list[PcapPacket] = []
    with open(path, "rb") as f:
        gh = f.read(24)
        magic = struct.unpack("<I", gh[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            e = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            e = ">"
        else:
            raise ValueError(f"not a classic pcap: magic {magic:#x}")
        nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
        linktype = struct.unpack(e + "I", gh[20:24])[0]
        l2 = {1: 14, 113: 16}.get(linktype)
        if l2 is None:
            raise ValueError(f"unsupported linktype {linktype}")
        while True:
            ph = f.read(16)
            if len(ph) < 16:
                break
            sec, frac, incl, orig = struct.unpack(e + "IIII", ph)
            data = f.read(incl)
            if incl != orig:
                raise ValueError("truncated packet in pcap")
            ip = data[l2:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            udp = ip[ihl:total]
            sport, dport, ulen, _ = struct.unpack("!HHHH", udp[:8])
            src_ip = ".".join(str(b) for b in ip[12:16])
            dst_ip = ".".join(str(b) for b in ip[16:20])
            out.append(PcapPacket(
                ts=sec + frac / (1e9 if nano else 1e6),
                src=(src_ip, sport), dst=(dst_ip, dport), payload=bytes(udp[8:ulen]),
            ))
    return out


# --------------------------------------------------------------------------
# RTP
# --------------------------------------------------------------------------

@dataclass
class RtpPacket:
    pt: int
    marker: bool
    seq: int
    ts: int
    ssrc: int
    payload: bytes


def rtp_build(pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def rtp_parse(data: bytes) -> RtpPacket:
    if len(data) < 12 or data[0] >> 6 != 2:
        raise ValueError("not RTP v2")
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        _, words = struct.unpack("!HH", data[off:off + 4])
        off += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:  # padding
        end -= data[-1]
    return RtpPacket(pt=b1 & 0x7F, marker=bool(b1 & 0x80), seq=seq, ts=ts, ssrc=ssrc,
                     payload=data[off:end])


# --------------------------------------------------------------------------
# H.264
# --------------------------------------------------------------------------

def split_annexb(buf: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes removed)."""
    nals: list[bytes] = []
    i, n = 0, len(buf)
    starts: list[tuple[int, int]] = []  # (start_code_pos, nal_start)
    while i + 3 <= n:
        if buf[i] == 0 and buf[i + 1] == 0:
            if buf[i + 2] == 1:
                starts.append((i, i + 3))
                i += 3
                continue
            if i + 4 <= n and buf[i + 2] == 0 and buf[i + 3] == 1:
                starts.append((i, i + 4))
                i += 4
                continue
        i += 1
    for k, (_, s) in enumerate(starts):
        e = starts[k + 1][0] if k + 1 < len(starts) else n
        nal = buf[s:e]
        # strip trailing zero bytes (belong to the next start code / padding)
        while nal and nal[-1] == 0 and e != n:
            nal = nal[:-1]
        if nal:
            nals.append(nal)
    return nals


def h264_packetize(nals: Sequence[bytes], mtu: int = RTP_MTU_PAYLOAD) -> list[bytes]:
    """RFC 6184 payloads for one access unit: single NAL unit packets when a
    NAL fits in ``mtu`` bytes, FU-A fragments otherwise (no STAP-A)."""
    out: list[bytes] = []
    for nal in nals:
        if len(nal) <= mtu:
            out.append(bytes(nal))
            continue
        hdr = nal[0]
        fu_ind = (hdr & 0xE0) | 28
        ntype = hdr & 0x1F
        data = nal[1:]
        chunk = mtu - 2
        pos = 0
        while pos < len(data):
            part = data[pos:pos + chunk]
            start = pos == 0
            end = pos + len(part) >= len(data)
            fu_hdr = (0x80 if start else 0) | (0x40 if end else 0) | ntype
            out.append(bytes([fu_ind, fu_hdr]) + part)
            pos += len(part)
    return out


def h264_depacketize(packets: Iterable[RtpPacket]) -> list[tuple[int, list[bytes]]]:
    """RTP (single NAL, STAP-A, FU-A) -> access units as (rtp_ts, [nal, ...]).

    An AU ends at the marker bit or at a timestamp change.  Packets must be in
    order (as in a pcap of one sender)."""
    aus: list[tuple[int, list[bytes]]] = []
    cur: list[bytes] = []
    cur_ts: int | None = None
    fu: bytearray | None = None
    for p in packets:
        if cur_ts is not None and p.ts != cur_ts and cur:
            aus.append((cur_ts, cur))
            cur = []
        cur_ts = p.ts
        pl = p.payload
        if not pl:
            continue
        t = pl[0] & 0x1F
        if 1 <= t <= 23:
            cur.append(bytes(pl))
        elif t == 24:  # STAP-A
            i = 1
            while i + 2 <= len(pl):
                size = struct.unpack("!H", pl[i:i + 2])[0]
                cur.append(bytes(pl[i + 2:i + 2 + size]))
                i += 2 + size
        elif t == 28:  # FU-A
            s, e = pl[1] & 0x80, pl[1] & 0x40
            if s:
                fu = bytearray([(pl[0] & 0xE0) | (pl[1] & 0x1F)]) + pl[2:]
            elif fu is not None:
                fu += pl[2:]
            if e and fu is not None:
                cur.append(bytes(fu))
                fu = None
        if p.marker and cur:
            aus.append((p.ts, cur))
            cur = []
            cur_ts = None
    if cur and cur_ts is not None:
        aus.append((cur_ts, cur))
    return aus


def annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def nal_types(nals: Iterable[bytes]) -> list[int]:
    return [n[0] & 0x1F for n in nals]


def pattern_frame(i: int, width: int, height: int) -> np.ndarray:
    """One yuv420p frame (shape (h*3/2, w), uint8) of the moving test pattern."""
    y = np.empty((height, width), np.uint8)
    # horizontal gradient background
    y[:] = (np.arange(width, dtype=np.uint32) * 160 // max(width - 1, 1) + 40).astype(np.uint8)
    # moving bright bar, 16 px wide, 4 px per frame
    bx = (i * 4) % width
    y[COUNTER_BLOCK:, bx:bx + 16] = 235
    # frame counter: COUNTER_BITS blocks on the top row, MSB first
    y[:COUNTER_BLOCK, :] = 128
    for b in range(COUNTER_BITS):
        x0 = b * COUNTER_BLOCK
        if x0 + COUNTER_BLOCK > width:
            break
        bit = (i >> (COUNTER_BITS - 1 - b)) & 1
        y[:COUNTER_BLOCK, x0:x0 + COUNTER_BLOCK] = 235 if bit else 16
    cw, ch = width // 2, height // 2
    u = np.full((ch, cw), 128, np.uint8)
    v = np.full((ch, cw), 128, np.uint8)
    # a textured (noise) block that changes every frame, so IDRs are large
    # enough to need FU-A fragmentation at the default bitrate
    rng = np.random.default_rng(i)
    th, tw = height // 4, width // 4
    y[height - th:, width - tw:] = rng.integers(16, 235, size=(th, tw), dtype=np.uint8)
    # a coloured quadrant that changes hue slowly
    u[ch // 2:, : cw // 2] = (64 + (i * 3) % 128)
    v[ch // 2:, : cw // 2] = (192 - (i * 3) % 128)
    return np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)], axis=0)


def read_frame_counter(luma: np.ndarray) -> int:
    """Decode the frame number drawn by :func:`pattern_frame` from a luma plane
    (2-D uint8 array at the original resolution)."""
    n = 0
    for b in range(COUNTER_BITS):
        x0 = b * COUNTER_BLOCK
        blk = luma[2:COUNTER_BLOCK - 2, x0 + 2:x0 + COUNTER_BLOCK - 2]
        n = (n << 1) | (1 if float(blk.mean()) > 128 else 0)
    return n


def encode_h264_access_units(seconds: float = 10, width: int = SOURCE_WIDTH, height: int = SOURCE_HEIGHT,
                             fps: int = 25, gop: int = 25, bitrate: int = 600_000,
                             frame_fn=None) -> list[bytes]:
    """Encode the test pattern (or ``frame_fn(i)`` -> yuv420p ndarray, shape (h*3/2, w));
    returns one Annex-B access unit per frame."""
    import av  # PyAV

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.framerate = Fraction(fps, 1)
    ctx.time_base = Fraction(1, fps)
    ctx.bit_rate = bitrate
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {
        "profile": "baseline",
        "level": "3.1",
        "preset": "veryfast",
        "tune": "zerolatency",
        "threads": "1",             # one slice per frame
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:aud=0",
    }
    aus: list[bytes] = []
    nframes = int(round(seconds * fps))
    for i in range(nframes):
        yuv = frame_fn(i) if frame_fn is not None else pattern_frame(i, width, height)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        for pkt in ctx.encode(frame):
            aus.append(bytes(pkt))
    for pkt in ctx.encode(None):
        aus.append(bytes(pkt))
    return aus


def make_h264_pcap(path: os.PathLike | str, seconds: float = 10, width: int = SOURCE_WIDTH,
                   height: int = SOURCE_HEIGHT, fps: int = 25, gop: int = 25, *, ssrc: int = H264_PCAP_SSRC,
                   pt: int = H264_PT, mtu: int = RTP_MTU_PAYLOAD, start_time: float = 1_700_000_000.0,
                   seq0: int = 1000, ts0: int = 90_000, frame_fn=None) -> dict:
    """Write an RTP/H.264 pcap of the moving test pattern (or of ``frame_fn(i)``, a yuv420p
    ndarray per frame, see :func:`encode_h264_access_units`); returns stats
    ``{"frames", "packets", "keyframes", "max_payload", "path"}``."""
    aus = encode_h264_access_units(seconds, width, height, fps, gop, frame_fn=frame_fn)
    seq = seq0
    npk = 0
    nkey = 0
    maxpl = 0
    with PcapWriter(path, src=PCAP_SRC, dst=PCAP_DST_VIDEO) as w:
        for i, au in enumerate(aus):
            nals = split_annexb(au)
            if 5 in nal_types(nals):
                nkey += 1
            payloads = h264_packetize(nals, mtu)
            rtp_ts = ts0 + i * VIDEO_CLOCK // fps
            t_frame = start_time + i / fps
            for k, pl in enumerate(payloads):
                last = k == len(payloads) - 1
                w.write(t_frame + k * 0.0002, rtp_build(pt, last, seq, rtp_ts, ssrc, pl))
                seq = (seq + 1) & 0xFFFF
                npk += 1
                maxpl = max(maxpl, len(pl))
    return {"frames": len(aus), "packets": npk, "keyframes": nkey, "max_payload": maxpl, "path": str(path)}


def decode_h264_access_units(aus: Iterable[bytes], with_frames: bool = False):
    """Decode Annex-B AUs with PyAV.  Returns (decoded_count, errors, frames)
    where frames is a list of yuv420p ndarrays when ``with_frames``."""
    import av

    dec = av.CodecContext.create("h264", "r")
    n = 0
    errors: list[str] = []
    frames = []
    for au in list(aus) + [None]:
        try:
            if au is None:
                got = dec.decode(None)
            else:
                got = dec.decode(av.Packet(au))
        except Exception as e:  # av.error.*
            errors.append(repr(e))
            continue
        for fr in got:
            n += 1
            if with_frames:
                frames.append(fr.to_ndarray(format="yuv420p"))
    return n, errors, frames


# --------------------------------------------------------------------------
# G.711 µ-law
# --------------------------------------------------------------------------

_BIAS = 0x84
_CLIP = 32635


def pcm16_to_ulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> µ-law bytes (ITU-T G.711), vectorized."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0x00)
    mag = np.minimum(np.abs(x), _CLIP) + _BIAS
    # exponent = position of highest set bit among bits 7..14
    exp = np.zeros_like(mag)
    for e in range(7, 0, -1):
        exp = np.where((exp == 0) & (mag >= (1 << (e + 7))), e, exp)
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8)


def ulaw_to_pcm16(u: np.ndarray) -> np.ndarray:
    u = (~u.astype(np.int32)) & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + _BIAS) << exp) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def tone_ulaw(seconds: float, freq: float = 440, amplitude: float = 0.5) -> bytes:
    """A sine tone as 8 kHz µ-law bytes, a whole number of 20 ms packets long."""
    n = int(round(seconds * AUDIO_CLOCK))
    n -= n % 160
    t = np.arange(n) / AUDIO_CLOCK
    pcm = (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)
    return pcm16_to_ulaw(pcm).tobytes()


def make_pcmu_raw(path: os.PathLike | str, seconds: float = 10, freq: float = 440,
                  amplitude: float = 0.5) -> dict:
    """Write a sine tone as raw µ-law (what sipp's rtp_stream sends with PT 0:
    160 bytes per 20 ms packet).  With an integer ``freq`` and whole seconds it
    loops without a click."""
    ulaw = tone_ulaw(seconds, freq, amplitude)
    with open(path, "wb") as f:
        f.write(ulaw)
    return {"samples": len(ulaw), "path": str(path)}


def make_pcmu_pcap(path: os.PathLike | str, seconds: float = 10, freq: float = 440, *,
                   amplitude: float = 0.5, ssrc: int = 0x5EED0002, pt: int = PCMU_PT,
                   start_time: float = 1_700_000_000.0, seq0: int = 2000, ts0: int = 8000) -> dict:
    """Write an RTP/PCMU pcap of a sine tone (20 ms / 160-byte packets)."""
    ulaw = tone_ulaw(seconds, freq, amplitude)
    npk = len(ulaw) // 160
    with PcapWriter(path, src=PCAP_SRC, dst=PCAP_DST_AUDIO) as w:
        for k in range(npk):
            w.write(start_time + k * 0.020,
                    rtp_build(pt, k == 0, seq0 + k, ts0 + 160 * k, ssrc, ulaw[160 * k:160 * (k + 1)]))
    return {"packets": npk, "samples": len(ulaw), "path": str(path)}


def dominant_frequency(pcm: np.ndarray, rate: int = AUDIO_CLOCK) -> float:
    """Frequency (Hz) of the strongest FFT bin of a mono signal."""
    x = pcm.astype(np.float64)
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


# --------------------------------------------------------------------------
# A/V sync material: flash + beep (see tests/peers/avcheck.py)
# --------------------------------------------------------------------------

def flash_beep_yuv_frame(i: int, width: int, height: int, fps: int, period_s: float = 2.0) -> np.ndarray:
    """Frame ``i`` of avcheck's flash/beep video (white at every ``period_s``, else dark with
    a moving bar and the frame counter) as a yuv420p ndarray (shape (h*3/2, w))."""
    import av

    from .avcheck import flash_beep_frame

    rgb = flash_beep_frame(i, width, height, fps, period_s)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def make_flash_beep_pcaps(video_path: os.PathLike | str, audio_path: os.PathLike | str, seconds: float = 65,
                          width: int = SOURCE_WIDTH, height: int = SOURCE_HEIGHT, fps: int = 25, gop: int = 25, *,
                          period_s: float = 2.0, beep_ms: float = 100.0, freq: float = 1000.0,
                          amplitude: float = 0.5, start_time: float = 1_700_000_000.0,
                          video_ts0: int = 90_000, audio_ts0: int = 8000) -> dict:
    """A/V sync source for sipp: an RTP/H.264 pcap of avcheck's flash pattern (one white
    frame every ``period_s``, frame 0 included; IDR every ``gop`` frames, so with the
    defaults every flash is an IDR) and an RTP/PCMU pcap (20 ms packets) of silence with a
    ``beep_ms`` ``freq`` Hz burst at the same instants (avcheck.flash_beep_audio at 8 kHz).

    Both pcaps share ``start_time``: frame ``i`` is at ``start_time + i / fps`` (RTP ts
    ``video_ts0 + i * 90000 / fps``), audio packet ``k`` at ``start_time + k * 0.020`` (RTP ts
    ``audio_ts0 + 160 k``), so the n-th flash and the n-th beep onset have the same pcap time
    (``start_time + n * period_s``) and the same RTP time in seconds from each stream's first
    packet: they coincide exactly in the source (``period_s`` must be a multiple of 20 ms and
    of one frame).  The audio pcap's payloads are what SippUas(audio_pcap=...) gives sipp's
    rtp_stream.  Returns ``{"video": make_h264_pcap stats, "audio": make_pcmu_pcap-like
    stats, "flash_times_s": [...], "beep_times_s": [...]}`` (times from the start)."""
    from .avcheck import flash_beep_audio, flash_frame_indices

    if abs(period_s / 0.020 - round(period_s / 0.020)) > 1e-9:
        raise ValueError("period_s must be a whole number of 20 ms packets")
    video = make_h264_pcap(video_path, seconds, width, height, fps, gop, start_time=start_time, ts0=video_ts0,
                           frame_fn=lambda i: flash_beep_yuv_frame(i, width, height, fps, period_s))
    pcm = flash_beep_audio(AUDIO_CLOCK, seconds, period_s, beep_ms, freq, amplitude)
    ulaw = pcm16_to_ulaw(pcm).tobytes()
    npk = len(ulaw) // 160
    with PcapWriter(audio_path, src=PCAP_SRC, dst=PCAP_DST_AUDIO) as w:
        for k in range(npk):
            w.write(start_time + k * 0.020,
                    rtp_build(PCMU_PT, k == 0, 2000 + k, audio_ts0 + 160 * k, 0x5EED0002,
                              ulaw[160 * k:160 * (k + 1)]))
    beeps = [k * period_s for k in range(int(seconds / period_s) + 1)
             if int(round((k * period_s + beep_ms / 1000) * AUDIO_CLOCK)) <= npk * 160]
    return {"video": video, "audio": {"packets": npk, "samples": npk * 160, "path": str(audio_path)},
            "flash_times_s": [i / fps for i in flash_frame_indices(fps, seconds, period_s)],
            "beep_times_s": beeps}


def pcap_flash_beep_times(video_pcap: os.PathLike | str, audio_pcap: os.PathLike | str, seconds: float = 10,
                          tone_hz: float = 1000.0) -> dict:
    """Check the source itself: decode the first ``seconds`` of the two pcaps and find the
    flashes (pcap time of the first packet of each white frame) and beep onsets (pcap time of
    the packet + sample offset), both relative to the earliest packet of the two pcaps.
    Returns ``{"flashes": [...], "beeps": [...], "rtp_flashes": [...], "rtp_beeps": [...]}``
    (the ``rtp_*`` lists: RTP time in seconds from each stream's first packet)."""
    from .avcheck import detect_beeps, detect_flashes

    vpk = read_pcap(video_pcap)
    apk = read_pcap(audio_pcap)
    t0 = min(vpk[0].ts, apk[0].ts)
    rtps = [rtp_parse(p.payload) for p in vpk]
    first_ts: dict[int, float] = {}
    for p, r in zip(vpk, rtps, strict=True):
        first_ts.setdefault(r.ts, p.ts - t0)
    aus = [au for au in h264_depacketize(rtps) if first_ts[au[0]] <= seconds]
    _, errors, frames = decode_h264_access_units([annexb(n) for _, n in aus], with_frames=True)
    if errors:
        raise ValueError(f"video pcap does not decode: {errors[:3]}")
    height = frames[0].shape[0] * 2 // 3
    luma = np.array([float(f[COUNTER_BLOCK:height].mean()) for f in frames])
    vtimes = np.array([first_ts[ts] for ts, _ in aus[:len(frames)]])
    rtp_v = np.array([(ts - aus[0][0]) / VIDEO_CLOCK for ts, _ in aus[:len(frames)]])
    a_parsed = [(p.ts - t0, rtp_parse(p.payload)) for p in apk if p.ts - t0 <= seconds]
    pcm = ulaw_to_pcm16(np.frombuffer(b"".join(r.payload for _, r in a_parsed), np.uint8)).astype(np.float64)
    atimes = np.concatenate([t + np.arange(len(r.payload)) / AUDIO_CLOCK for t, r in a_parsed])
    ats0 = a_parsed[0][1].ts
    rtp_a = np.concatenate([(r.ts - ats0 + np.arange(len(r.payload))) / AUDIO_CLOCK for _, r in a_parsed])
    x = pcm / 32768.0
    return {
        "flashes": detect_flashes(vtimes, luma), "beeps": detect_beeps(atimes, x, AUDIO_CLOCK, tone_hz),
        "rtp_flashes": detect_flashes(rtp_v, luma), "rtp_beeps": detect_beeps(rtp_a, x, AUDIO_CLOCK, tone_hz),
    }
