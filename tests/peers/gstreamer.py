"""GStreamer as a real RTP sender: ``gst-launch-1.0`` with ``rtpbin`` sending an MP4's
H.264 (RFC 6184, packetization-mode 1) and its audio as PCMU, with RTCP sender reports
from GStreamer's own RTP session code, in real time (``sync=true`` sinks).

    sender = GstRtpSender("media.mp4", audio=("127.0.0.1", 40000), video=("127.0.0.1", 40002),
                          video_delay_ms=150, workdir=tmp_path / "gst")
    sender.start()        # RTP to audio/video ports, RTCP (SR + SDES) to port + 1
    ...
    sender.stop()         # always; sender.diagnostics() has the command line and its log

``video_delay_ms`` makes the video late on the wire only: the video RTP udpsink gets
``ts-offset``, so each packet leaves that much after its running time while the
payloader's RTP timestamps and rtpbin's SRs still come from the buffers' capture time
(``rtcp-sync-send-time=false``: the SR's NTP <-> RTP mapping is the capture clock, the
same for both sessions of the one rtpbin).  A receiver that maps both tracks through
their SRs puts them back together; one that uses arrival times sees the video late.

``rtcp=False`` links no RTCP source pad of rtpbin, so no RTCP leaves at all (the
control without SRs).  ``rtcp_interval_ms`` sets the sessions' ``rtcp-min-interval``
(GStreamer's default is 5 s, so its first SR comes 1.25 to 3.75 s after the start).
GStreamer does not listen for RTCP here: what the receiver sends back goes to the
ports the SIP answer advertised (e.g. sipp's sinks).

Debian packages: gstreamer1.0-tools, gstreamer1.0-plugins-{base,good,bad,ugly},
gstreamer1.0-libav (``avdec_aac`` for the MP4's AAC).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .util import terminate_process, which_or_none

# element -> Debian package that provides it
ELEMENTS = {
    "rtpbin": "gstreamer1.0-plugins-good", "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad", "rtph264pay": "gstreamer1.0-plugins-good",
    "avdec_aac": "gstreamer1.0-libav", "decodebin": "gstreamer1.0-plugins-base",
    "audioconvert": "gstreamer1.0-plugins-base", "audioresample": "gstreamer1.0-plugins-base",
    "mulawenc": "gstreamer1.0-plugins-good", "rtppcmupay": "gstreamer1.0-plugins-good",
    "udpsink": "gstreamer1.0-plugins-good", "filesrc": "gstreamer1.0 (core)",
    "queue": "gstreamer1.0 (core)",
}


def gstreamer_available() -> str | None:
    """None when gst-launch-1.0 and every element of the pipeline are there, else what is missing."""
    if which_or_none("gst-launch-1.0") is None or which_or_none("gst-inspect-1.0") is None:
        return "gst-launch-1.0 not installed (Debian package 'gstreamer1.0-tools')"
    for element, package in ELEMENTS.items():
        r = subprocess.run(["gst-inspect-1.0", "--exists", element], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            return f"GStreamer element {element} missing (Debian package '{package}')"
    return None


class GstRtpSender:
    """One ``gst-launch-1.0`` process sending ``media_file`` (MP4: H.264 + any audio
    decodebin reads) as RTP: session 0 video (``video_pt``), session 1 audio as PCMU
    8 kHz mono (``audio_pt``), each to its (host, port) with RTCP to port + 1."""

    def __init__(self, media_file: str | os.PathLike, *, audio: tuple[str, int], video: tuple[str, int],
                 audio_pt: int = 0, video_pt: int = 96, video_delay_ms: float = 0.0, rtcp: bool = True,
                 rtcp_interval_ms: int | None = None, workdir: str | os.PathLike) -> None:
        self.media_file = Path(media_file)
        self.audio, self.video = audio, video
        self.audio_pt, self.video_pt = audio_pt, video_pt
        self.video_delay_ms = video_delay_ms
        self.rtcp = rtcp
        self.rtcp_interval_ms = rtcp_interval_ms
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.workdir / "gst-launch.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def pipeline(self) -> list[str]:
        """The gst-launch-1.0 pipeline description, one token per list item."""
        (ahost, aport), (vhost, vport) = self.audio, self.video
        rtpbin = ["rtpbin", "name=rtpbin", "rtcp-sync-send-time=false"]
        if self.rtcp_interval_ms is not None:
            ns = int(self.rtcp_interval_ms * 1_000_000)
            # child-proxy properties, applied when rtpbin creates its sessions
            rtpbin += [f"rtpsession0::rtcp-min-interval={ns}", f"rtpsession1::rtcp-min-interval={ns}"]
        delay_ns = int(self.video_delay_ms * 1_000_000)
        desc = rtpbin + [
            "filesrc", f"location={self.media_file}", "!", "qtdemux", "name=demux",
            # video: session 0; the sink sends each packet delay_ns after its running time
            "demux.video_0", "!", "queue", "!", "h264parse", "!",
            "rtph264pay", f"pt={self.video_pt}", "config-interval=-1", "mtu=1200", "!", "rtpbin.send_rtp_sink_0",
            "rtpbin.send_rtp_src_0", "!", "udpsink", f"host={vhost}", f"port={vport}", "sync=true",
            f"ts-offset={delay_ns}",
            # audio: session 1, PCMU 8 kHz mono
            "demux.audio_0", "!", "queue", "!", "decodebin", "!", "audioconvert", "!", "audioresample", "!",
            "audio/x-raw,rate=8000,channels=1", "!", "mulawenc", "!",
            "rtppcmupay", f"pt={self.audio_pt}", "!", "rtpbin.send_rtp_sink_1",
            "rtpbin.send_rtp_src_1", "!", "udpsink", f"host={ahost}", f"port={aport}", "sync=true",
        ]
        if self.rtcp:
            desc += [
                "rtpbin.send_rtcp_src_0", "!", "udpsink", f"host={vhost}", f"port={vport + 1}",
                "sync=false", "async=false",
                "rtpbin.send_rtcp_src_1", "!", "udpsink", f"host={ahost}", f"port={aport + 1}",
                "sync=false", "async=false",
            ]
        return desc

    @property
    def cmd(self) -> list[str]:
        binary = which_or_none("gst-launch-1.0")
        if binary is None:
            raise RuntimeError("gst-launch-1.0 not installed (Debian package 'gstreamer1.0-tools')")
        return [binary, "-e", *self.pipeline()]

    def start(self) -> GstRtpSender:
        cmd = self.cmd
        self._log = open(self.log_file, "wb")
        # GST_DEBUG=2: warnings and errors in the log, no per-buffer noise
        env = {**os.environ, "GST_DEBUG": os.environ.get("GST_DEBUG", "2"), "GST_DEBUG_NO_COLOR": "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir), env=env, start_new_session=True)
        return self

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> int | None:
        rc = terminate_process(self.proc, timeout=3.0) if self.proc is not None else None
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self) -> str:
        rc = self.poll()
        return (f"cmd: {' '.join(self.cmd)}\nrunning: {self.proc is not None and rc is None} (rc={rc})\n"
                f"--- gst-launch log ---\n{self.log()[-8000:]}")
