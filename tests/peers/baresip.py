"""baresip as a real far end: a softphone that answers our calls with H.264
(from a video file, through its avcodec/avformat modules), a sine tone (ausine)
in the codecs it is told to offer (PCMU, PCMA, opus), RTCP sender and receiver
reports, and its own handling of hold re-INVITEs.

    bob = Baresip(kamailio, workdir=tmp_path / "baresip", audio_codecs=("opus",))
    bob.start()                 # listening on a free port, REGISTERed as bob at the proxy
    ... sipstream calls bob.aor through the proxy; baresip answers by itself ...
    bob.received_requests("INVITE")   # full text of each INVITE it received (-s trace)
    bob.stop()

Without a proxy (``proxy=None``) baresip does not register; callers dial
``bob.direct_uri``.

Headless: no sound card and no display.  The audio player is ``aubridge``
(a device no source reads: decoded audio goes nowhere), the display
``fakevideo``.  The video file is made at test time (``make_video``): 352x288,
a size sipstream's placeholder generator never produces.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .util import LOOPBACK, free_port, free_udp_port_pair, terminate_process, wait_until, which_or_none

DOMAIN = "sipstream.test"
WIDTH, HEIGHT, FPS = SOURCE_WIDTH, SOURCE_HEIGHT, SOURCE_FPS

# baresip's names for the codecs of an account's audio_codecs= parameter
AUDIO_CODECS = {"pcmu": "PCMU/8000/1", "pcma": "PCMA/8000/1", "opus": "opus/48000/2"}


class BaresipError(RuntimeError):
    pass


def baresip_available() -> str | None:
    """None when baresip and the modules we load are installed, else what is missing."""
    if which_or_none("baresip") is None:
        return "baresip not installed (Debian packages 'baresip-core' and 'baresip-ffmpeg')"
    for module in ("avcodec", "avformat", "ausine", "g711", "opus", "fakevideo", "aubridge"):
        if not (Path(MODULE_PATH) / f"{module}.so").exists():
            return f"baresip module {module}.so missing (Debian 'baresip-core' / 'baresip-ffmpeg')"
    if which_or_none("ffmpeg") is None:
        return "ffmpeg not installed (makes baresip's video file)"
    return None


MODULE_PATH = "/usr/lib/baresip/modules"


def make_video(path: os.PathLike | str, seconds: float = 180, width: int = WIDTH, height: int = HEIGHT,
               fps: int = FPS) -> Path:
    """An H.264 MP4 of ffmpeg's moving ``testsrc2`` pattern (baresip's avformat
    source decodes it and its avcodec module encodes it again). It must outlast
    every call: at the end of the file baresip 1.0 logs "avformat: rewind
    stream" and then sends no more video (seen with a 20 s file: a test whose
    call outlived it got only the generator's placeholder frames)."""
    path = Path(path)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size={width}x{height}:rate={fps}", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
         "-g", str(fps), str(path)],
        check=True, timeout=120,
    )
    return path


class Baresip:
    def __init__(self, proxy=None, *, user: str = "bob", password: str = "bob-secret", domain: str = DOMAIN,
                 audio_codecs: tuple[str, ...] = ("pcmu",), video: bool = True,
                 video_file: os.PathLike | str | None = None,
                 tone_hz: int = 440, workdir: os.PathLike | str, sip_port: int | None = None,
                 listen_ip: str = LOOPBACK, net_interface: str = LOOPBACK, regint: int = 600,
                 extra_config: str = "", start_timeout: float = 15.0) -> None:
        self.proxy = proxy
        self.user = user
        self.password = password
        self.domain = domain
        self.audio_codecs = audio_codecs
        self.video = video
        self.video_file = Path(video_file) if video_file else None
        self.tone_hz = tone_hz
        self.workdir = Path(workdir)
        self.listen_ip = listen_ip
        self.net_interface = net_interface
        self.sip_port = sip_port or free_port(udp=True, tcp=True)
        self.rtp_first = free_udp_port_pair(16)
        self.regint = regint
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "baresip.log"
        self._log_fh = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def direct_uri(self) -> str:
        return f"sip:{self.user}@{self.listen_ip}:{self.sip_port}"

    # -- configuration -----------------------------------------------------
    def _config(self) -> str:
        modules = ["g711.so", "opus.so", "ausine.so", "aubridge.so"]
        if self.video:
            modules += ["avcodec.so", "avformat.so", "fakevideo.so"]
        lines = [
            "poll_method epoll",
            f"sip_listen {self.listen_ip}:{self.sip_port}",
            "call_local_timeout 120",
            "call_max_calls 4",
            f"audio_player aubridge,{self.user}-nowhere",
            f"audio_source ausine,{self.tone_hz}",
            "audio_alert aubridge,nowhere-alert",
            "ausrc_srate 48000",
            "auplay_srate 48000",
            "ausrc_channels 2",  # ausine makes stereo only
            f"net_interface {self.net_interface}",
            "audio_level no",
            "ausrc_format s16",
            "auplay_format s16",
            "auenc_format s16",
            "audec_format s16",
            "audio_buffer 20-160",
            f"video_size {WIDTH}x{HEIGHT}",
            "video_bitrate 600000",
            f"video_fps {FPS}",
            "video_fullscreen no",
            "videnc_format yuv420p",
            "avcodec_h264enc libx264",
            "avcodec_h264dec h264",
            "rtp_tos 0",
            f"rtp_ports {self.rtp_first}-{self.rtp_first + 15}",
            "rtcp_mux no",
            "jitter_buffer_delay 1-10",
            "rtp_stats yes",
            f"module_path {MODULE_PATH}",
            *[f"module {m}" for m in modules],
            "module_tmp account.so",
            "module_app menu.so",
            "opus_bitrate 64000",
            "opus_stereo no",
            "opus_sprop_stereo no",
            "statmode_default off",
        ]
        if self.video:
            lines += [f"video_source avformat,{self.video_file}", "video_display fakevideo,nil"]
        return "\n".join(lines) + "\n" + self.extra_config

    def _account(self) -> str:
        codecs = ",".join(AUDIO_CODECS[c] for c in self.audio_codecs)
        params = [f"auth_pass={self.password}", "answermode=auto", f"audio_codecs={codecs}",
                  "medianat=", "mediaenc="]
        if self.proxy is not None:
            params.append(f'outbound="sip:{self.proxy.host}:{self.proxy.port};transport=udp"')
            params.append(f"regint={self.regint}")
            uri = f"<sip:{self.user}@{self.domain};transport=udp>"
        else:
            params.append("regint=0")
            uri = f"<sip:{self.user}@{self.listen_ip}:{self.sip_port};transport=udp>"
        return uri + ";" + ";".join(params) + "\n"

    # -- running -----------------------------------------------------------
    def start(self) -> Baresip:
        binary = which_or_none("baresip")
        if binary is None:
            raise BaresipError("baresip not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.video and self.video_file is None:
            self.video_file = make_video(self.workdir / "video.mp4")
        (self.workdir / "config").write_text(self._config())
        (self.workdir / "accounts").write_text(self._account())
        (self.workdir / "contacts").write_text("")
        # line-buffered stdout: the -s trace is read while baresip runs
        cmd = ["stdbuf", "-oL", "-eL", binary, "-4", "-f", str(self.workdir), "-s", "-v"]
        self._log_fh = open(self.log_path, "wb")
        env = dict(os.environ, HOME=str(self.workdir))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir), env=env, start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BaresipError(f"baresip exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            text = self.log_text()
            if self.proxy is not None:
                return self.registered()
            return "baresip is ready" in text

        if not wait_until(ready, self.start_timeout, 0.05):
            log = self.log_text()
            self.stop()
            raise BaresipError(f"baresip not ready within {self.start_timeout}s:\n{log[-4000:]}")
        return self

    def registered(self) -> bool:
        # "bob@sipstream.test: {0/UDP/v4} 200 OK (...) [1 binding]"
        return re.search(rf"{re.escape(self.user)}@\S+: \{{\d+/UDP/v4\}} 200 OK", self.log_text()) is not None

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def sip_messages(self, direction: str = "recv") -> list[str]:
        """SIP messages of baresip's -s trace, ``recv`` (received) or ``send``.
        Each is logged as ``#``, ``UDP src -> dst``, the message, then an ANSI reset."""
        ours = f"{self.listen_ip}:{self.sip_port}"
        out = []
        for m in re.finditer(r"^(?:UDP|TCP) (\S+) -> (\S+)\r?\n(.*?)(?=\x1b\[;m|\Z)", self.log_text(), re.M | re.S):
            sent = m.group(1) == ours
            if sent == (direction == "send"):
                out.append(m.group(3))
        return out

    def received_requests(self, method: str) -> list[str]:
        return [m for m in self.sip_messages("recv") if m.startswith(f"{method} ")]

    def sent_responses(self, cseq_method: str) -> list[str]:
        return [m for m in self.sip_messages("send")
                if m.startswith("SIP/2.0 ") and re.search(rf"^CSeq:\s*\d+ {cseq_method}\s*$", m, re.M | re.I)]

    def diagnostics(self) -> str:
        rc = self.proc.poll() if self.proc else None
        return f"baresip {self.direct_uri} rc={rc} workdir={self.workdir}\n{self.log_text()[-30000:]}"

    def stop(self) -> None:
        if self.proc is not None:
            terminate_process(self.proc, timeout=5.0)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

