"""sipp peers: the callee ``bob`` (UAS) and a stand-in caller (UAC).

    uas = SippUas(proxy=kamailio, scenario="uas_answer")   # or proxy=15060 / "127.0.0.1:15060"
    uas.start()              # UAS sipp listening + bob REGISTERed (digest) via the proxy
    ...                      # sipstream calls sip:bob@sipstream.test through the proxy
    rc = uas.wait(60)        # sipp exit code: 0 = scenario completed
    assert "BYE" in uas.messages()
    uas.stop()

Scenarios (tests/peers/scenarios/*.xml) are templates: ``%%NAME%%``
placeholders are filled in (media paths, timeouts, user...) and the rendered
copy is written to the work dir, because sipp reads ``rtp_stream`` /
``play_pcap_*`` files when it loads the scenario (no run-time variables there).

bob's media is sent by sipp itself, on the ACK: PCMU with its rtp_stream
engine (``<exec rtp_stream="FILE,LOOPS,0"/>``, raw µ-law, from ``-mp``) and
H.264 with ``<exec play_pcap_video="PCAP"/>`` (from ``-mp`` + 2, through a
raw socket: needs root / CAP_NET_RAW).  sipp takes the destinations from
the caller's SDP offer.

Registration is done by a second, short-lived sipp (scenario register.xml)
whose Contact points at the UAS sipp's port: one sipp process cannot both
REGISTER and then accept an INVITE with a new Call-ID (it drops messages it
cannot map to a known call).

sipp exit codes: 0 all calls OK, 1 some call failed, 97 internal exit command,
99 ended with no call processed, 255/-1 fatal error, 254/-2 socket bind error.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

from .rtp import RtcpSinks
from .util import LOOPBACK, _port_free, free_port, free_udp_port_pair, terminate_process, which_or_none

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
DOMAIN = "sipstream.test"

UAS_SCENARIOS = ("uas_answer", "uas_answer_then_bye", "uas_ring_no_answer")


class SippError(RuntimeError):
    pass


def sipp_available() -> bool:
    return which_or_none("sipp") is not None


def render_scenario(name: str, dest_dir: Union[str, os.PathLike], values: Dict[str, object]) -> Path:
    """Fill ``%%KEY%%`` placeholders of scenarios/<name>.xml into dest_dir/<name>.xml."""
    src = SCENARIOS_DIR / (name if name.endswith(".xml") else name + ".xml")
    text = src.read_text()
    for k, v in values.items():
        text = text.replace(f"%%{k}%%", str(v))
    left = sorted(set(re.findall(r"%%([A-Z_]+)%%", text)))
    if left:
        raise SippError(f"scenario {src.name}: no value for {left}")
    dest = Path(dest_dir) / src.name
    dest.write_text(text)
    return dest


def _proxy_addr(proxy) -> tuple[str, int]:
    if proxy is None:
        return LOOPBACK, 15060
    if isinstance(proxy, int):
        return LOOPBACK, proxy
    if isinstance(proxy, str):
        host, _, port = proxy.rpartition(":")
        return host or LOOPBACK, int(port)
    if isinstance(proxy, tuple):
        return proxy[0], int(proxy[1])
    return proxy.host, int(proxy.port)  # Kamailio instance


# ---------------------------------------------------------------------------
# default media, generated once per process
# ---------------------------------------------------------------------------
_media_cache: Dict[float, tuple[Path, Path]] = {}
_media_dirs: List[str] = []


def _rm_media_dirs() -> None:
    for d in _media_dirs:
        shutil.rmtree(d, ignore_errors=True)


def default_media(seconds: float = 30) -> tuple[Path, Path]:
    """(pcmu_raw, h264_pcap) of ``seconds`` length (440 Hz tone as raw µ-law
    for rtp_stream, test pattern pcap for play_pcap_video), generated once per
    process into a temp dir that is removed at exit."""
    if seconds not in _media_cache:
        from .media import make_h264_pcap, make_pcmu_raw

        if not _media_dirs:
            atexit.register(_rm_media_dirs)
        d = tempfile.mkdtemp(prefix="sipstream-media-")
        _media_dirs.append(d)
        a = Path(d) / "pcmu.ulaw"
        v = Path(d) / "h264.pcap"
        make_pcmu_raw(a, seconds=seconds)
        make_h264_pcap(v, seconds=seconds)
        _media_cache[seconds] = (a, v)
    return _media_cache[seconds]


def pcmu_pcap_to_raw(pcap: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """The RTP payloads of a PCMU pcap, concatenated: a raw µ-law file for rtp_stream."""
    from .media import read_pcap, rtp_parse

    data = b"".join(rtp_parse(p.payload).payload for p in read_pcap(pcap))
    Path(dest).write_bytes(data)
    return Path(dest)


# ---------------------------------------------------------------------------
# one sipp process
# ---------------------------------------------------------------------------
class SippProcess:
    """A sipp run in the foreground under subprocess, logs in ``workdir``."""

    def __init__(self, name: str, scenario: Path, args: List[str], workdir: Path,
                 remote: Optional[str] = None, sip_port: Optional[int] = None) -> None:
        self.name = name
        self.scenario = scenario
        self.workdir = workdir
        self.sip_port = sip_port or free_port(udp=True, tcp=False)
        self.message_file = workdir / f"{name}_messages.log"
        self.error_file = workdir / f"{name}_errors.log"
        self.screen_file = workdir / f"{name}_screen.log"
        self.output_file = workdir / f"{name}_output.log"
        binary = which_or_none("sipp")
        if binary is None:
            raise SippError("sipp binary not found (Debian package 'sip-tester')")
        self.cmd = [binary]
        if remote:
            self.cmd.append(remote)
        self.cmd += [
            "-sf", str(scenario),
            "-i", LOOPBACK,
            "-p", str(self.sip_port),
            "-cp", str(free_port(udp=True, tcp=False)),   # control socket: avoid 8888 clashes
            "-m", "1",
            "-nostdin",
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_screen", "-screen_file", str(self.screen_file),
        ] + args
        self.proc: Optional[subprocess.Popen] = None
        self._out = None

    def start(self) -> "SippProcess":
        self._out = open(self.output_file, "wb")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            cwd=str(self.workdir), start_new_session=True,
        )
        return self

    def wait_bound(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SippError(f"sipp {self.name} exited early ({self.proc.returncode}):\n{self.diagnostics()}")
            if not _port_free(self.sip_port, udp=True, tcp=False):
                return
            time.sleep(0.02)
        raise SippError(f"sipp {self.name} did not bind 127.0.0.1:{self.sip_port}:\n{self.diagnostics()}")

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for exit; returns the exit code. Raises subprocess.TimeoutExpired."""
        rc = self.proc.wait(timeout=timeout)
        self._close()
        return rc

    def poll(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def stop(self) -> Optional[int]:
        rc = None
        if self.proc is not None:
            # SIGUSR1 would make sipp stop gracefully; SIGTERM is enough here.
            rc = terminate_process(self.proc, timeout=3.0)
        self._close()
        return rc

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    @staticmethod
    def _read(p: Path) -> str:
        try:
            return p.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def messages(self) -> str:
        return self._read(self.message_file)

    def errors(self) -> str:
        return self._read(self.error_file)

    def output(self) -> str:
        return self._read(self.output_file)

    def diagnostics(self) -> str:
        return (f"cmd: {' '.join(self.cmd)}\n--- output ---\n{self.output()[-3000:]}\n"
                f"--- errors ---\n{self.errors()[-3000:]}\n--- messages ---\n{self.messages()[-6000:]}")


class _SippPeer:
    def __init__(self, workdir) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipstream-sipp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# ---------------------------------------------------------------------------
# callee
# ---------------------------------------------------------------------------
class SippUas(_SippPeer):
    """sipp as the registered callee (default ``bob``).

    scenario: "uas_answer" | "uas_answer_then_bye" | "uas_ring_no_answer".
    Media, sent by sipp (``-mp media_port``) after the ACK to the addresses in
    the caller's SDP offer until the call ends: PCMU (rtp_stream) from
    127.0.0.1:``media_port`` and H.264 (play_pcap_video) from ``media_port + 2``;
    the SDP answer advertises those ports.  The audio is a raw µ-law file
    (from ``audio_pcap``'s payloads, or a ``media_seconds`` 440 Hz tone),
    looped while ``loop_media``; the video pcap is played once (sipp cannot
    loop pcaps), so it must outlast the call (``media_seconds`` = 30 by default).
    sipp binds no RTCP ports: what the caller sends to port + 1 is recorded in
    ``uas.media.audio_rtcp_sink`` / ``video_rtcp_sink``
    (:class:`tests.peers.rtp.RtpSink`).
    """

    def __init__(
        self,
        proxy=None,                       # Kamailio | port | "host:port" | (host, port)
        scenario: str = "uas_answer",
        *,
        user: str = "bob",
        password: str = "bob-secret",
        domain: str = DOMAIN,
        sip_port: Optional[int] = None,
        media_port: Optional[int] = None,
        audio_pcap: Optional[Union[str, os.PathLike]] = None,
        video_pcap: Optional[Union[str, os.PathLike]] = None,
        media_seconds: float = 30,
        answer_delay_ms: int = 500,
        bye_timeout_s: float = 60,
        hangup_after_s: float = 5,
        cancel_timeout_s: float = 60,
        register: bool = True,
        register_expires: int = 3600,
        loop_media: bool = True,
        extra_args: Optional[List[str]] = None,
        workdir: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        super().__init__(workdir)
        if scenario.endswith(".xml"):
            scenario = scenario[:-4]
        self.proxy_host, self.proxy_port = _proxy_addr(proxy)
        self.scenario_name = scenario
        self.user, self.password, self.domain = user, password, domain
        self.sip_port = sip_port or free_port(udp=True, tcp=False)
        self.media_port = media_port or free_udp_port_pair(4)
        self.audio_pcap = audio_pcap
        self.video_pcap = video_pcap
        self.media_seconds = media_seconds
        self.answer_delay_ms = answer_delay_ms
        self.bye_timeout_s = bye_timeout_s
        self.hangup_after_s = hangup_after_s
        self.cancel_timeout_s = cancel_timeout_s
        self.register = register
        self.register_expires = register_expires
        self.loop_media = loop_media
        self.media: RtcpSinks | None = None  # once started (not for uas_ring_no_answer)
        self.extra_args = list(extra_args or [])
        self.uas: Optional[SippProcess] = None
        self.registrar: Optional[SippProcess] = None

    # convenient facts for tests
    @property
    def aor(self) -> str:
        """What a caller dials: sip:bob@sipstream.test"""
        return f"sip:{self.user}@{self.domain}"

    @property
    def audio_port(self) -> int:
        return self.media_port

    @property
    def video_port(self) -> int:
        return self.media_port + 2

    def start(self, register_timeout: float = 10.0) -> "SippUas":
        with_media = self.scenario_name != "uas_ring_no_answer"
        audio_file = video_pcap = None
        if with_media:
            if self.audio_pcap is None or self.video_pcap is None:
                default_audio, default_video = default_media(self.media_seconds)
            audio_file = (pcmu_pcap_to_raw(self.audio_pcap, self.workdir / "audio.ulaw")
                          if self.audio_pcap is not None else default_audio)
            video_pcap = self.video_pcap if self.video_pcap is not None else default_video
        values = {
            "USER": self.user,
            "DOMAIN": self.domain,
            "AUDIO_FILE": audio_file,
            "AUDIO_LOOPS": -1 if self.loop_media else 1,
            "VIDEO_PCAP": video_pcap,
            "ANSWER_DELAY_MS": int(self.answer_delay_ms),
            "BYE_TIMEOUT_MS": int(self.bye_timeout_s * 1000),
            "HANGUP_MS": int(self.hangup_after_s * 1000),
            "CANCEL_TIMEOUT_MS": int(self.cancel_timeout_s * 1000),
        }
        scen = render_scenario(self.scenario_name, self.workdir, values)
        # overall safety net so a forgotten sipp never lingers
        limit = int(max(self.bye_timeout_s, self.cancel_timeout_s, self.hangup_after_s) + 120)
        self.uas = SippProcess(
            "uas", scen,
            # sipp binds media_port (audio) and media_port + 2 (video), not the RTCP ports
            ["-mp", str(self.media_port), "-aa", "-timeout", f"{limit}s"] + self.extra_args,
            self.workdir, sip_port=self.sip_port,
        )
        try:
            if with_media:
                self.media = RtcpSinks(self.audio_port, self.video_port)
            self.uas.start()
            self.uas.wait_bound()
            if self.register:
                self.do_register(timeout=register_timeout)
        except BaseException:  # noqa: B036 - clean up on anything, re-raise
            self.stop()
            raise
        return self

    def do_register(self, expires: Optional[int] = None, timeout: float = 10.0) -> None:
        """REGISTER user -> Contact sip:user@127.0.0.1:<sip_port> (expires 0 = unregister)."""
        scen = render_scenario("register", self.workdir, {
            "USER": self.user, "DOMAIN": self.domain, "CONTACT_PORT": self.sip_port,
            "EXPIRES": self.register_expires if expires is None else expires,
        })
        reg = SippProcess(
            "register", scen, ["-au", self.user, "-ap", self.password, "-timeout", f"{int(timeout)}s"],
            self.workdir, remote=f"{self.proxy_host}:{self.proxy_port}",
        )
        self.registrar = reg
        reg.start()
        try:
            rc = reg.wait(timeout=timeout + 2)
        except subprocess.TimeoutExpired:
            reg.stop()
            raise SippError(f"REGISTER of {self.user} timed out:\n{reg.diagnostics()}")
        if rc != 0 or not re.search(r"SIP/2.0 200", reg.messages()):
            raise SippError(f"REGISTER of {self.user} failed (sipp rc={rc}):\n{reg.diagnostics()}")

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the UAS sipp to end; returns its exit code (0 = scenario completed).
        Raises subprocess.TimeoutExpired after ``timeout`` seconds."""
        return self.uas.wait(timeout)

    def poll(self) -> Optional[int]:
        return self.uas.poll() if self.uas else None

    def messages(self) -> str:
        """SIP messages sent/received by the UAS sipp (its -trace_msg log)."""
        return self.uas.messages() if self.uas else ""

    def register_messages(self) -> str:
        return self.registrar.messages() if self.registrar else ""

    def received(self, method_or_code: str) -> bool:
        """True if the UAS received a request with this method (e.g. "BYE", "CANCEL")
        or a response with this code (e.g. "200")."""
        return any(
            blk.startswith(method_or_code + " ") or blk.startswith("SIP/2.0 " + method_or_code)
            for blk in _received_messages(self.messages())
        )

    def diagnostics(self) -> str:
        parts = []
        if self.registrar:
            parts.append("=== register ===\n" + self.registrar.diagnostics())
        if self.uas:
            parts.append("=== uas ===\n" + self.uas.diagnostics())
        return "\n".join(parts)

    def stop(self) -> None:
        for p in (self.registrar, self.uas):
            if p is not None:
                p.stop()
        if self.media is not None:
            self.media.close()


def _received_messages(log: str) -> List[str]:
    """First lines of the messages sipp logged as received ('... message received ...')."""
    out = []
    chunks = re.split(r"^-{10,}.*$", log, flags=re.M)
    for ch in chunks:
        m = re.search(r"(?:UDP|TCP) message received \[\d+\] bytes :\s*\n+(.*)", ch)
        if m:
            out.append(m.group(1).strip())
    return out


# ---------------------------------------------------------------------------
# caller (stand-in for sipstream in the smoke tests)
# ---------------------------------------------------------------------------
class SippUac(_SippPeer):
    """sipp as caller ``alice``: INVITE (407 -> auth) callee via the proxy,
    ACK, stay ``call_ms``, BYE.  Its SDP offers rtp_ip:audio_port/video_port
    (sockets of the test, not sipp's)."""

    def __init__(self, proxy=None, callee: str = "bob", *, user: str = "alice",
                 password: str = "alice-secret", domain: str = DOMAIN, call_ms: int = 2000,
                 audio_port: Optional[int] = None, video_port: Optional[int] = None,
                 rtp_ip: str = LOOPBACK, workdir=None, scenario: str = "uac_call") -> None:
        super().__init__(workdir)
        self.proxy_host, self.proxy_port = _proxy_addr(proxy)
        self.callee, self.user, self.password, self.domain = callee, user, password, domain
        self.call_ms = call_ms
        if audio_port is None or video_port is None:
            base = free_udp_port_pair(4)
            audio_port = audio_port or base
            video_port = video_port or base + 2
        self.audio_port, self.video_port, self.rtp_ip = audio_port, video_port, rtp_ip
        self.scenario_name = scenario
        self.proc: Optional[SippProcess] = None

    def start(self) -> "SippUac":
        scen = render_scenario(self.scenario_name, self.workdir, {
            "USER": self.user, "DOMAIN": self.domain, "CALLEE": self.callee,
            "CALL_MS": int(self.call_ms), "RTP_IP": self.rtp_ip,
            "AUDIO_PORT": self.audio_port, "VIDEO_PORT": self.video_port,
        })
        self.proc = SippProcess(
            "uac", scen,
            ["-au", self.user, "-ap", self.password, "-mp", str(free_udp_port_pair(4)),
             "-timeout", f"{int(self.call_ms / 1000) + 60}s"],
            self.workdir, remote=f"{self.proxy_host}:{self.proxy_port}",
        ).start()
        return self

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout)

    def messages(self) -> str:
        return self.proc.messages() if self.proc else ""

    def diagnostics(self) -> str:
        return self.proc.diagnostics() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
