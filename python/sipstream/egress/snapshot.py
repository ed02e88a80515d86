"""``/stream/snapshot``: the latest picture of a stream as PNG, decoded with
PyAV from the stream's last keyframe and the frames after it."""

from __future__ import annotations

import av


class SnapshotError(Exception):
    """No picture could be decoded."""


def snapshot_png(gop: list[bytes]) -> tuple[bytes, int, int]:
    """PNG bytes, width and height of the last decodable picture of ``gop``
    (H.264 access units from a keyframe on). Blocking: run it off the loop."""
    decoder = av.CodecContext.create("h264", "r")
    last = None
    try:
        for access_unit in gop:
            for frame in decoder.decode(av.Packet(access_unit)):
                last = frame
        for frame in decoder.decode(None):
            last = frame
    except av.error.FFmpegError as exc:
        if last is None:
            raise SnapshotError(f"cannot decode the latest keyframe: {exc}") from None
    if last is None:
        raise SnapshotError("the stream has no decodable picture yet")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height = last.width, last.height
    encoder.pix_fmt = "rgb24"
    picture = last.reformat(format="rgb24")
    png = b"".join(bytes(p) for p in [*encoder.encode(picture), *encoder.encode(None)])
    return png, last.width, last.height
