"""CMAF (fragmented MP4) for HLS: the init segment of an H.264 and/or AAC
stream, and the fragments (``moof`` + ``mdat``) that become LL-HLS parts,
cut where ``Segmenter`` decides. Sans-IO: samples in, bytes out.

FFmpeg's mp4 muxer decides on its own when a fragment ends (``frag_duration``,
``frag_keyframe``) and PyAV cannot flush one on demand, so the boxes are
written here: an LL-HLS part must end exactly where the playlist says and a
segment must start with a keyframe, which only the writer of the boxes can
promise. ISO/IEC 14496-12 (boxes), 14496-15 (``avcC``), 14496-1 (``esds``)."""

from __future__ import annotations

import dataclasses
import struct

from .._core import h264_sps_resolution

_US = 1_000_000
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# trun sample_flags (14496-12 §8.8.3.1): a sync sample depends on no other;
# any other depends on others and is not a sync sample.
_SYNC = 0x02000000
_NON_SYNC = 0x01010000
# AAC sampling_frequency_index values (14496-3 Table 1.18)
# A part is cut on the other track when the main one has sent nothing for this long.
STALL_US = 500_000
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# ------------------------------------------------------------------ H.264
def nal_units(annexb: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit (start codes and the zero
    bytes before them removed: a NAL unit never ends with a zero byte)."""
    return [nal.rstrip(b"\x00") for nal in annexb.split(b"\x00\x00\x01") if nal.rstrip(b"\x00")]


def avcc_sample(annexb: bytes) -> bytes:
    """An access unit as an MP4 sample: 4-byte length before each NAL unit,
    access unit delimiters (type 9) dropped. SPS and PPS stay in band, so a
    decoder follows a change of them (a far end's new picture size)."""
    out = []
    for nal in nal_units(annexb):
        if nal[0] & 0x1F != 9:
            out.append(struct.pack(">I", len(nal)))
            out.append(nal)
    return b"".join(out)


def parameter_sets(annexb: bytes) -> tuple[bytes, bytes]:
    """(SPS, PPS) of a keyframe; ValueError when it lacks one."""
    sps = pps = b""
    for nal in nal_units(annexb):
        kind = nal[0] & 0x1F
        if kind == 7 and not sps:
            sps = nal
        elif kind == 8 and not pps:
            pps = nal
    if len(sps) < 4 or not pps:
        raise ValueError("the keyframe carries no SPS and PPS: an init segment needs both")
    return sps, pps


def audio_specific_config(rate: int, channels: int) -> bytes:
    """AAC-LC's AudioSpecificConfig (14496-3 §1.6.2.1): object type 2, the
    rate's index, the channel configuration."""
    index = _AAC_RATES.index(rate)
    return struct.pack(">H", (2 << 11) | (index << 7) | (channels << 3))


# ------------------------------------------------------------------ tracks
@dataclasses.dataclass(frozen=True)
class VideoTrack:
    sps: bytes
    pps: bytes
    track_id: int = 1
    timescale: int = 90000
    kind = "video"

    @property
    def size(self) -> tuple[int, int]:
        return h264_sps_resolution(self.sps) or (0, 0)

    @property
    def codec(self) -> str:
        """RFC 6381 codecs value, e.g. ``avc1.42e01f``."""
        return "avc1." + self.sps[1:4].hex()

    def sample_entry(self) -> bytes:
        width, height = self.size
        avcc = _box(b"avcC", bytes([1, self.sps[1], self.sps[2], self.sps[3], 0xFF, 0xE1]),
                    struct.pack(">H", len(self.sps)), self.sps, b"\x01", struct.pack(">H", len(self.pps)), self.pps)
        return _box(b"avc1", bytes(6), struct.pack(">HHH", 1, 0, 0), bytes(12),
                    struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1), bytes(32),
                    struct.pack(">Hh", 0x18, -1), avcc)

    def header(self) -> tuple[bytes, bytes]:
        """(tkhd's volume and size fields, the media header box)."""
        width, height = self.size
        return struct.pack(">HH", 0, 0) + _MATRIX + struct.pack(">II", width << 16, height << 16), \
            _full(b"vmhd", 0, 1, bytes(8))


@dataclasses.dataclass(frozen=True)
class AudioTrack:
    rate: int
    channels: int
    track_id: int = 2
    kind = "audio"

    @property
    def timescale(self) -> int:
        return self.rate

    @property
    def codec(self) -> str:
        return "mp4a.40.2"

    def sample_entry(self) -> bytes:
        config = audio_specific_config(self.rate, self.channels)
        decoder_specific = b"\x05" + bytes([len(config)]) + config
        decoder_config = b"\x04" + bytes([13 + len(decoder_specific)]) + bytes([0x40, 0x15]) + bytes(11) \
            + decoder_specific
        sl_config = b"\x06\x01\x02"
        es = b"\x03" + bytes([3 + len(decoder_config) + len(sl_config)]) + struct.pack(">HB", 0, 0) \
            + decoder_config + sl_config
        return _box(b"mp4a", bytes(6), struct.pack(">H", 1), bytes(8),
                    struct.pack(">HHHHI", self.channels, 16, 0, 0, self.rate << 16), _full(b"esds", 0, 0, es))

    def header(self) -> tuple[bytes, bytes]:
        return struct.pack(">HH", 0x0100, 0) + _MATRIX + bytes(8), _full(b"smhd", 0, 0, bytes(4))


Track = VideoTrack | AudioTrack


def init_segment(tracks: list[Track]) -> bytes:
    """``ftyp`` + ``moov`` with an empty sample table per track and ``mvex``:
    the ``EXT-X-MAP`` of a stream."""
    ftyp = _box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0), struct.pack(">IH", 0x10000, 0x100),
                 bytes(10), _MATRIX, bytes(24), struct.pack(">I", max(t.track_id for t in tracks) + 1))
    traks = []
    for track in tracks:
        tkhd_tail, media_header = track.header()
        tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),
                     struct.pack(">hh", 0, 0), tkhd_tail)
        handler = b"vide" if track.kind == "video" else b"soun"
        mdia = _box(b"mdia",
                    _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, 0x55C4, 0)),
                    _full(b"hdlr", 0, 0, bytes(4), handler, bytes(12), b"sipstream\x00"),
                    _box(b"minf", media_header,
                         _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1))),
                         _box(b"stbl",
                              _full(b"stsd", 0, 0, struct.pack(">I", 1), track.sample_entry()),
                              _full(b"stts", 0, 0, bytes(4)), _full(b"stsc", 0, 0, bytes(4)),
                              _full(b"stsz", 0, 0, bytes(8)), _full(b"stco", 0, 0, bytes(4)))))
        traks.append(_box(b"trak", tkhd, mdia))
    mvex = _box(b"mvex", *(_full(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks))
    return ftyp + _box(b"moov", mvhd, *traks, mvex)


@dataclasses.dataclass(slots=True)
class Sample:
    data: bytes  # an MP4 sample: length-prefixed NAL units, or one AAC frame
    dts: int  # in the track's timescale, from the stream's start
    duration: int  # in the track's timescale
    sync: bool


def fragment(sequence: int, runs: list[tuple[Track, list[Sample]]]) -> bytes:
    """One ``moof`` + ``mdat``: each track's samples (contiguous in time) in
    a ``traf`` whose ``tfdt`` is its first sample's decode time."""
    runs = [(track, samples) for track, samples in runs if samples]

    def moof(offsets: list[int]) -> bytes:
        trafs = []
        for (track, samples), offset in zip(runs, offsets, strict=True):
            entries = b"".join(struct.pack(">III", s.duration, len(s.data), _SYNC if s.sync else _NON_SYNC)
                               for s in samples)
            trafs.append(_box(b"traf",
                              _full(b"tfhd", 0, 0x020000, struct.pack(">I", track.track_id)),  # default-base-is-moof
                              _full(b"tfdt", 1, 0, struct.pack(">Q", samples[0].dts)),
                              _full(b"trun", 0, 0x000701, struct.pack(">Ii", len(samples), offset), entries)))
        return _box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", sequence)), *trafs)

    # Data offsets count from the moof's start; its size does not depend on them.
    size = len(moof([0] * len(runs)))
    offsets, position = [], size + 8
    for _, samples in runs:
        offsets.append(position)
        position += sum(len(s.data) for s in samples)
    return moof(offsets) + _box(b"mdat", *(s.data for _, samples in runs for s in samples))


# --------------------------------------------------------------- segmenter
@dataclasses.dataclass
class Part:
    """An LL-HLS part (one CMAF fragment) of segment ``msn``."""

    msn: int
    index: int  # within its segment
    start_us: int  # from the stream's start
    duration_us: int
    independent: bool  # starts with a keyframe (always, for audio only)
    data: bytes
    last: bool = False  # its segment ends with it


class Segmenter:
    """Cuts a stream's samples into parts and segments.

    The first track (video when there is one, else audio) sets the cuts. A
    part ends before the sample that would take it past ``part_us``, so no
    part is longer than the part target while the frame rate holds. A
    segment ends before a keyframe once it is ``segment_us - part_us`` long
    (the keyframe asked for at that age comes a little later), and before
    any sample that would take it past ``max_segment_us``, keyframe or not,
    so that EXT-X-TARGETDURATION holds even for a far end that ignores
    keyframe requests. Samples of the other track go into the part that is
    cut after they arrive, in order."""

    def __init__(self, tracks: list[Track], part_us: int, segment_us: int, max_segment_us: int) -> None:
        self.tracks = tracks
        self.part_us, self.segment_us, self.max_segment_us = part_us, segment_us, max_segment_us
        self.main = tracks[0]
        self.other = tracks[1] if len(tracks) > 1 else None
        self.msn = 0
        self.part_index = 0
        self.segment_start_us = 0
        self.part_start_us = 0
        self.sequence = 0
        self._main: list[Sample] = []  # of the part being built
        self._last: Sample | None = None  # its duration is known when the next one comes
        self._other: list[Sample] = []
        self._interval_us = 0
        self.done: list[Part] = []  # cut since the caller last took them

    def _us(self, track: Track, ticks: int) -> int:
        return ticks * _US // track.timescale

    @property
    def segment_age_us(self) -> int:
        """How long the segment being built already is."""
        last = self._last
        end = self._us(self.main, last.dts) if last is not None else self.part_start_us
        return end - self.segment_start_us

    def add(self, track: Track, data: bytes, dts: int, duration: int, sync: bool) -> None:
        """A sample, in decode order within its track."""
        sample = Sample(data, dts, duration, sync)
        if track is not self.main:
            self._other.append(sample)
            # The main track stalled (a far end that stopped its video): the
            # other one keeps the parts coming, so players do not stall too.
            if self._us(track, dts) - self.part_start_us > self.part_us + STALL_US:
                end_us = self.part_start_us + self.part_us
                if any(self._us(track, s.dts) < end_us for s in self._other):
                    self._cut(end_us, end_us - self.segment_start_us + self.part_us > self.max_segment_us)
            return
        last = self._last
        if last is not None:
            if dts <= last.dts:
                return  # never happens with AvWriter's increasing timestamps; a container would refuse it too
            last.duration = dts - last.dts
            self._interval_us = self._us(track, last.duration)
            self._main.append(last)
            start_us = self._us(track, dts)
            ahead_us = start_us + self._interval_us  # where this part would end with the new sample in it
            new_segment = (ahead_us - self.segment_start_us > self.max_segment_us
                           or sync and start_us - self.segment_start_us >= self.segment_us - self.part_us)
            if new_segment or ahead_us - self.part_start_us > self.part_us:
                self._cut(start_us, new_segment)
        self._last = sample

    def _cut(self, end_us: int, segment_ends: bool, everything: bool = False) -> None:
        other: list[Sample] = []
        if self.other is not None:
            cut_ticks = end_us * self.other.timescale // _US
            other = self._other if everything else [s for s in self._other if s.dts < cut_ticks]
            self._other = self._other[len(other):]
        runs: list[tuple[Track, list[Sample]]] = [(self.main, self._main)]
        if self.other is not None:
            runs.append((self.other, other))
        self.sequence += 1
        independent = bool(self._main) and self._main[0].sync
        self.done.append(Part(self.msn, self.part_index, self.part_start_us, end_us - self.part_start_us,
                              independent, fragment(self.sequence, runs), segment_ends))
        self._main = []
        self.part_start_us = end_us
        if segment_ends:
            self.msn += 1
            self.part_index = 0
            self.segment_start_us = end_us
        else:
            self.part_index += 1

    def finish(self) -> None:
        """The stream ended: what is left becomes the last part of the last segment."""
        last, self._last = self._last, None
        end_us = self.part_start_us
        if last is not None:
            if self._interval_us:  # a video frame lasts as long as the one before it
                last.duration = self._interval_us * self.main.timescale // _US
            self._main.append(last)
            end_us = self._us(self.main, last.dts + last.duration)
        if self.other is not None and self._other:
            tail = self._other[-1]
            end_us = max(end_us, self._us(self.other, tail.dts + tail.duration))
        # The other track's last samples (the AAC encoder's tail) may reach
        # past the part target: no part gets longer than it.
        left = self._main
        while end_us - self.part_start_us > self.part_us:
            boundary = self.part_start_us + self.part_us
            self._main = [s for s in left if self._us(self.main, s.dts) < boundary]
            left = left[len(self._main):]
            self._cut(boundary, False)
        self._main = left
        if self._main or self._other:
            self._cut(max(end_us, self.part_start_us + 1), True, everything=True)
