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
from collections.abc import Callable
from pathlib import Path

from .rtp import MediaSinks
from .util import LOOPBACK, _port_free, free_port, free_udp_port_pair, terminate_process, which_or_none

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
DOMAIN = "sipstream.test"

UAS_SCENARIOS = (
    "uas_answer", "uas_answer_then_bye", "uas_ring_no_answer", "uas_reject", "uas_early_media",
    "uas_hold", "uas_media_change", "uas_update_session_timer", "uas_expect_refresh",
    "uas_info_dtmf", "uas_no_rtp", "uas_options_in_dialog", "uas_challenge_bye",
)
UAC_SCENARIOS = (
    "uac_call", "uac_call_wait_bye", "uac_cancel", "uac_call_expect_error", "uac_call_responder",
    "uac_call_refresh_update", "uac_call_refresh_invite", "uac_call_info", "uac_call_bye_auth",
)
# scenarios without an SDP answer from bob (no media ports, no sinks)
_NO_MEDIA = ("uas_ring_no_answer", "uas_reject")
# scenarios whose media is "sink" unless told otherwise: sipp sends nothing in them
_SINK_DEFAULT = ("uas_no_rtp",)

REASONS = {
    403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 503: "Service Unavailable", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


class SippError(RuntimeError):
    pass


def sipp_available() -> bool:
    return which_or_none("sipp") is not None


def render_scenario(name: str, dest_dir: str | os.PathLike, values: dict[str, object]) -> Path:
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
_media_cache: dict[float, tuple[Path, Path]] = {}
_media_dirs: list[str] = []


def _rm_media_dirs() -> None:
    for d in _media_dirs:
        shutil.rmtree(d, ignore_errors=True)


def default_media(seconds: float = 30) -> tuple[Path, Path]:
    """(pcmu_raw, h264_pcap) of ``seconds`` length (440 Hz tone as raw µ-law
    for rtp_stream, test pattern pcap for play_pcap_video), generated once per
    process into a temp dir that is removed at exit."""
    from .media import make_h264_pcap, make_pcmu_raw

    def make(a: Path, v: Path) -> None:
        make_pcmu_raw(a, seconds=seconds)
        make_h264_pcap(v, seconds=seconds)

    return _cached_media(_media_cache, seconds, "sipstream-media-", ("pcmu.ulaw", "h264.pcap"), make)


def _cached_media(cache: dict[float, tuple[Path, Path]], seconds: float, prefix: str, names: tuple[str, str],
                  make: Callable[[Path, Path], None]) -> tuple[Path, Path]:
    """``make(audio, video)`` once per process and length, into a temp dir removed at exit."""
    if seconds not in cache:
        if not _media_dirs:
            atexit.register(_rm_media_dirs)
        d = tempfile.mkdtemp(prefix=prefix)
        _media_dirs.append(d)
        a, v = Path(d) / names[0], Path(d) / names[1]
        make(a, v)
        cache[seconds] = (a, v)
    return cache[seconds]


_flash_beep_cache: dict[float, tuple[Path, Path]] = {}


def flash_beep_media(seconds: float = 65) -> tuple[Path, Path]:
    """(pcmu_pcap, h264_pcap) of ``seconds`` of A/V sync material (media.make_flash_beep_pcaps:
    352x288 @ 25 fps, a white frame and a 100 ms 1 kHz beep together every 2 s, aligned in
    pcap time and RTP time), generated once per process into a temp dir removed at exit.
    Use as ``SippUas(..., audio_pcap=a, video_pcap=v)`` (the audio pcap's payloads become
    rtp_stream's raw µ-law file); the call must end before ``seconds``."""
    from .media import make_flash_beep_pcaps

    return _cached_media(_flash_beep_cache, seconds, "sipstream-flashbeep-",
                         ("flash_beep_pcmu.pcap", "flash_beep_h264.pcap"),
                         lambda a, v: make_flash_beep_pcaps(v, a, seconds=seconds))


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

    def __init__(self, name: str, scenario: Path, args: list[str], workdir: Path,
                 remote: str | None = None, sip_port: int | None = None) -> None:
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
        self.proc: subprocess.Popen | None = None
        self._out = None

    def start(self) -> SippProcess:
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

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; returns the exit code. Raises subprocess.TimeoutExpired."""
        rc = self.proc.wait(timeout=timeout)
        self._close()
        return rc

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> int | None:
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

    scenario: one of ``UAS_SCENARIOS`` (see tests/peers/README.md for what
    each does and which kwargs it uses).

    ``media="sipp"`` (default): media sent by sipp (``-mp media_port``) to the
    addresses in the caller's SDP offer until the call ends: PCMU
    (rtp_stream) from 127.0.0.1:``media_port`` and H.264 (play_pcap_video)
    from ``media_port + 2``; the SDP answer advertises those ports.  The audio
    is a raw µ-law file (from ``audio_pcap``'s payloads, or a
    ``media_seconds`` 440 Hz tone), looped while ``loop_media``; the video
    pcap is played once (sipp cannot loop pcaps), so it must outlast the call
    (``media_seconds`` = 30 by default).  sipp binds no RTCP ports: what the
    caller sends to port + 1 is recorded in ``uas.media.audio_rtcp_sink`` /
    ``video_rtcp_sink`` (:class:`tests.peers.rtp.RtpSink`).

    ``media="sink"``: sipp sends no media; bob's SDP advertises ports where
    the test's RtpSinks listen: ``uas.media.audio_sink`` / ``video_sink``
    (RTP, what the caller sends, e.g. RFC 4733 events) and the two RTCP
    sinks as above.  sipp's own ``-mp`` is then an unrelated free range.
    ``uas_no_rtp`` defaults to "sink"; ``uas_ring_no_answer``/``uas_reject``
    have no media (``uas.media`` is None).

    ``telephone_event=101``: bob's audio answer also lists
    ``101 telephone-event/8000`` (``a=fmtp:101 0-16``), so the caller may
    send RFC 4733 DTMF.  Default None: PCMU only.
    """

    def __init__(
        self,
        proxy=None,                       # Kamailio | port | "host:port" | (host, port)
        scenario: str = "uas_answer",
        *,
        user: str = "bob",
        password: str = "bob-secret",
        domain: str = DOMAIN,
        sip_port: int | None = None,
        media_port: int | None = None,
        media: str | None = None,      # "sipp" | "sink"; None: per scenario
        telephone_event: int | None = None,
        audio_pcap: str | os.PathLike | None = None,
        video_pcap: str | os.PathLike | None = None,
        media_seconds: float = 30,
        answer_delay_ms: int = 500,
        bye_timeout_s: float = 60,
        hangup_after_s: float = 5,
        cancel_timeout_s: float = 60,
        # uas_reject
        code: int = 486,
        reason: str | None = None,
        reject_delay_ms: int = 0,
        ring: bool = False,
        # uas_early_media
        answer_after_ms: int = 2000,
        # uas_hold / uas_media_change / uas_options_in_dialog / uas_update_session_timer
        hold_after_ms: int = 1000,
        resume_after_ms: int = 1000,
        change_after_ms: int = 1000,
        options_after_ms: int = 1000,
        update_after_ms: int = 1000,
        # uas_update_session_timer / uas_expect_refresh
        session_expires: int = 90,
        refresh_wait_ms: int = 60000,
        # uas_challenge_bye
        bye_auth_user: str = "alice",
        bye_auth_password: str = "alice-secret",
        bye_auth_realm: str = DOMAIN,
        bye_auth_qop: bool = False,
        register: bool = True,
        register_expires: int = 3600,
        loop_media: bool = True,
        values: dict[str, object] | None = None,
        extra_args: list[str] | None = None,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(workdir)
        if scenario.endswith(".xml"):
            scenario = scenario[:-4]
        self.proxy_host, self.proxy_port = _proxy_addr(proxy)
        self.scenario_name = scenario
        self.user, self.password, self.domain = user, password, domain
        self.sip_port = sip_port or free_port(udp=True, tcp=False)
        if media is None:
            media = "sink" if scenario in _SINK_DEFAULT else "sipp"
        if media not in ("sipp", "sink"):
            raise ValueError(f"media must be 'sipp' or 'sink', not {media!r}")
        self.media_mode = media
        self.has_media = scenario not in _NO_MEDIA
        if media == "sipp":
            # sipp's -mp: audio from media_port, video from media_port + 2, both advertised
            self.media_port = media_port or free_udp_port_pair(4)
            self._audio_port, self._video_port = self.media_port, self.media_port + 2
        else:
            # advertised ports are the test's sinks (media_port = their base); sipp gets other ones
            base = media_port or free_udp_port_pair(4)
            self._audio_port, self._video_port = base, base + 2
            self.media_port = free_udp_port_pair(4)
        self.telephone_event = telephone_event
        self.audio_pcap = audio_pcap
        self.video_pcap = video_pcap
        self.media_seconds = media_seconds
        self.answer_delay_ms = answer_delay_ms
        self.bye_timeout_s = bye_timeout_s
        self.hangup_after_s = hangup_after_s
        self.cancel_timeout_s = cancel_timeout_s
        self.code = int(code)
        self.reason = reason or REASONS.get(self.code, "Error")
        self.reject_delay_ms = reject_delay_ms
        self.ring = ring
        self.answer_after_ms = answer_after_ms
        self.hold_after_ms = hold_after_ms
        self.resume_after_ms = resume_after_ms
        self.change_after_ms = change_after_ms
        self.options_after_ms = options_after_ms
        self.update_after_ms = update_after_ms
        self.session_expires = session_expires
        self.refresh_wait_ms = refresh_wait_ms
        self.bye_auth_user, self.bye_auth_password = bye_auth_user, bye_auth_password
        self.bye_auth_realm, self.bye_auth_qop = bye_auth_realm, bye_auth_qop
        self.register = register
        self.register_expires = register_expires
        self.loop_media = loop_media
        self.values = dict(values or {})
        self.media: MediaSinks | None = None  # once started (None without SDP answer)
        self.extra_args = list(extra_args or [])
        self.uas: SippProcess | None = None
        self.registrar: SippProcess | None = None

    # convenient facts for tests
    @property
    def aor(self) -> str:
        """What a caller dials: sip:bob@sipstream.test"""
        return f"sip:{self.user}@{self.domain}"

    @property
    def audio_port(self) -> int:
        """bob's advertised audio RTP port (sipp's -mp, or the audio_sink's port)."""
        return self._audio_port

    @property
    def video_port(self) -> int:
        """bob's advertised video RTP port (sipp's -mp + 2, or the video_sink's port)."""
        return self._video_port

    def _render_values(self, audio_file, video_pcap) -> dict[str, object]:
        sipp_media = self.media_mode == "sipp"
        te = self.telephone_event
        values: dict[str, object] = {
            "USER": self.user,
            "DOMAIN": self.domain,
            "AUDIO_FILE": audio_file,
            "AUDIO_LOOPS": -1 if self.loop_media else 1,
            "VIDEO_PCAP": video_pcap,
            # SDP: sipp's keywords (what sipp binds) or the sinks' port numbers
            "AUDIO_PORT": "[rtpstream_audio_port]" if sipp_media else self._audio_port,
            "VIDEO_PORT": "[media_port+2]" if sipp_media else self._video_port,
            "TE_PT": f" {te}" if te is not None else "",
            "TE_ATTRS": (f"\n      a=rtpmap:{te} telephone-event/8000\n      a=fmtp:{te} 0-16"
                         if te is not None else ""),
            # <exec rtp_stream/play_pcap_video> lines are commented out in sink mode
            "MEDIA_BEGIN": "" if sipp_media else "<!-- media=sink: sipp sends nothing",
            "MEDIA_END": "" if sipp_media else "-->",
            "ANSWER_DELAY_MS": int(self.answer_delay_ms),
            "BYE_TIMEOUT_MS": int(self.bye_timeout_s * 1000),
            "HANGUP_MS": int(self.hangup_after_s * 1000),
            "CANCEL_TIMEOUT_MS": int(self.cancel_timeout_s * 1000),
            "CODE": self.code,
            "REASON": self.reason,
            "REJECT_DELAY_MS": int(self.reject_delay_ms),
            "RING_BEGIN": "" if self.ring else "<!-- ring=False: no 180",
            "RING_END": "" if self.ring else "-->",
            "ANSWER_AFTER_MS": int(self.answer_after_ms),
            "HOLD_AFTER_MS": int(self.hold_after_ms),
            "RESUME_AFTER_MS": int(self.resume_after_ms),
            "CHANGE_AFTER_MS": int(self.change_after_ms),
            "OPTIONS_AFTER_MS": int(self.options_after_ms),
            "UPDATE_AFTER_MS": int(self.update_after_ms),
            "SE": int(self.session_expires),
            "REFRESH_WAIT_MS": int(self.refresh_wait_ms),
            "AUTH_USER": self.bye_auth_user,
            "AUTH_PASSWORD": self.bye_auth_password,
            "AUTH_REALM": self.bye_auth_realm,
            "NONCE": f"{os.getpid():x}{time.monotonic_ns():x}",
            "QOP": ', qop="auth"' if self.bye_auth_qop else "",
        }
        if self.scenario_name == "uas_media_change" and self.media is not None:
            values["CHANGED_AUDIO_PORT"] = self.media.changed.audio_port
            values["CHANGED_VIDEO_PORT"] = self.media.changed.video_port
        values.update(self.values)
        return values

    def start(self, register_timeout: float = 10.0) -> SippUas:
        with_media = self.has_media and self.media_mode == "sipp"
        audio_file = video_pcap = None
        if with_media:
            if self.audio_pcap is None or self.video_pcap is None:
                default_audio, default_video = default_media(self.media_seconds)
            audio_file = (pcmu_pcap_to_raw(self.audio_pcap, self.workdir / "audio.ulaw")
                          if self.audio_pcap is not None else default_audio)
            video_pcap = self.video_pcap if self.video_pcap is not None else default_video
        # overall safety net so a forgotten sipp never lingers
        limit = int(max(self.bye_timeout_s, self.cancel_timeout_s, self.hangup_after_s,
                        self.refresh_wait_ms / 1000) + 120)
        try:
            if self.has_media:
                self.media = MediaSinks(self._audio_port, self._video_port,
                                        rtp=self.media_mode == "sink")
                if self.scenario_name == "uas_media_change":
                    base = free_udp_port_pair(4)
                    self.media.changed = MediaSinks(base, base + 2, rtp=True)
            scen = render_scenario(self.scenario_name, self.workdir,
                                   self._render_values(audio_file, video_pcap))
            self.uas = SippProcess(
                "uas", scen,
                # sipp binds media_port (audio) and media_port + 2 (video), not the RTCP ports
                ["-mp", str(self.media_port), "-aa", "-timeout", f"{limit}s"] + self.extra_args,
                self.workdir, sip_port=self.sip_port,
            )
            self.uas.start()
            self.uas.wait_bound()
            if self.register:
                self.do_register(timeout=register_timeout)
        except BaseException:  # noqa: B036 - clean up on anything, re-raise
            self.stop()
            raise
        return self

    def do_register(self, expires: int | None = None, timeout: float = 10.0) -> None:
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
            raise SippError(f"REGISTER of {self.user} timed out:\n{reg.diagnostics()}") from None
        if rc != 0 or not re.search(r"SIP/2.0 200", reg.messages()):
            raise SippError(f"REGISTER of {self.user} failed (sipp rc={rc}):\n{reg.diagnostics()}")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the UAS sipp to end; returns its exit code (0 = scenario completed).
        Raises subprocess.TimeoutExpired after ``timeout`` seconds."""
        return self.uas.wait(timeout)

    def poll(self) -> int | None:
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

    def received_messages(self, method_or_code: str | None = None) -> list[str]:
        """Full text of each SIP message the UAS received (in order), optionally only
        requests of this method ("INFO") or responses with this code ("200")."""
        return _received_messages(self.messages(), method_or_code, full=True)

    def sent_messages(self, method_or_code: str | None = None) -> list[str]:
        """Full text of each SIP message the UAS sent (retransmissions included)."""
        return _logged_messages(self.messages(), method_or_code, full=True, direction="sent")

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


def sip_header(msg: str, name: str) -> str | None:
    """Value of the first header ``name`` (case-insensitive) in a logged message, or None."""
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\s*$", msg.split("\n\n", 1)[0].replace("\r", ""),
                  flags=re.M | re.I)
    return m.group(1) if m else None


def sip_body(msg: str) -> str:
    """The body of a logged message (after the blank line), CRLFs as LFs."""
    parts = msg.replace("\r", "").split("\n\n", 1)
    return parts[1].strip("\n") if len(parts) > 1 else ""


def _logged_messages(log: str, method_or_code: str | None = None, full: bool = False,
                     direction: str = "received") -> list[str]:
    """The messages sipp logged (-trace_msg) as received ('... message received ...')
    or sent ('... message sent ...'): their first lines, or (full=True) their
    whole text; optionally only requests of this method / responses with this code."""
    out = []
    chunks = re.split(r"^-{10,}.*$", log, flags=re.M)
    head = (r"(?:UDP|TCP) message received \[\d+\] bytes :" if direction == "received"
            else r"(?:UDP|TCP) message sent \(\d+ bytes\):")
    for ch in chunks:
        m = re.search(head + r"\s*\n+(.*)", ch, flags=re.S)
        if not m:
            continue
        text = m.group(1).strip("\r\n")
        first = text.split("\n", 1)[0].strip()
        if method_or_code is not None and not (
                first.startswith(method_or_code + " ") or first.startswith("SIP/2.0 " + method_or_code + " ")):
            continue
        out.append(text if full else first)
    return out


def _received_messages(log: str, method_or_code: str | None = None, full: bool = False) -> list[str]:
    return _logged_messages(log, method_or_code, full, "received")


# ---------------------------------------------------------------------------
# caller (stand-in for sipstream in the smoke tests)
# ---------------------------------------------------------------------------
class SippUac(_SippPeer):
    """sipp as caller ``alice``: INVITE (407 -> auth) callee via the proxy,
    ACK, stay ``call_ms``, BYE.  Its SDP offers rtp_ip:audio_port/video_port
    (sockets of the test, not sipp's).

    scenario: one of ``UAC_SCENARIOS`` (tests/peers/README.md).  Extra knobs:
    ``expect_code`` (uac_call_expect_error: the final response it expects),
    ``session_expires`` (the Session-Expires of its refresh in
    uac_call_refresh_*), ``reinvite_direction`` (the a= direction of its SDP
    answers to re-INVITEs in uac_call_responder), ``values`` (any other
    placeholder, e.g. ``{"UPDATE_200_HEADER": "X-Foo: 1"}``: uac_call_responder's
    200 to an UPDATE without the echoed Session-Expires)."""

    def __init__(self, proxy=None, callee: str = "bob", *, user: str = "alice",
                 password: str = "alice-secret", domain: str = DOMAIN, call_ms: int = 2000,
                 audio_port: int | None = None, video_port: int | None = None,
                 rtp_ip: str = LOOPBACK, workdir=None, scenario: str = "uac_call",
                 expect_code: int = 486, session_expires: int = 90,
                 reinvite_direction: str = "recvonly",
                 values: dict[str, object] | None = None) -> None:
        super().__init__(workdir)
        self.proxy_host, self.proxy_port = _proxy_addr(proxy)
        self.callee, self.user, self.password, self.domain = callee, user, password, domain
        self.call_ms = call_ms
        if audio_port is None or video_port is None:
            base = free_udp_port_pair(4)
            audio_port = audio_port or base
            video_port = video_port or base + 2
        self.audio_port, self.video_port, self.rtp_ip = audio_port, video_port, rtp_ip
        self.scenario_name = scenario[:-4] if scenario.endswith(".xml") else scenario
        self.expect_code = int(expect_code)
        self.session_expires = int(session_expires)
        self.reinvite_direction = reinvite_direction
        self.values = dict(values or {})
        self.proc: SippProcess | None = None

    def start(self) -> SippUac:
        values: dict[str, object] = {
            "USER": self.user, "DOMAIN": self.domain, "CALLEE": self.callee,
            "CALL_MS": int(self.call_ms), "RTP_IP": self.rtp_ip,
            "AUDIO_PORT": self.audio_port, "VIDEO_PORT": self.video_port,
            "EXPECT_CODE": self.expect_code, "SE": self.session_expires,
            "REINVITE_DIRECTION": self.reinvite_direction,
            # uac_call_responder's extra header in its 200 to an UPDATE
            "UPDATE_200_HEADER": "[last_Session-Expires:]",
        }
        values.update(self.values)
        scen = render_scenario(self.scenario_name, self.workdir, values)
        self.proc = SippProcess(
            "uac", scen,
            ["-au", self.user, "-ap", self.password, "-mp", str(free_udp_port_pair(4)),
             "-timeout", f"{int(self.call_ms / 1000) + 60}s"],
            self.workdir, remote=f"{self.proxy_host}:{self.proxy_port}",
        ).start()
        return self

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def messages(self) -> str:
        return self.proc.messages() if self.proc else ""

    def received_messages(self, method_or_code: str | None = None) -> list[str]:
        """Full text of each SIP message the UAC received, optionally filtered."""
        return _received_messages(self.messages(), method_or_code, full=True)

    def sent_messages(self, method_or_code: str | None = None) -> list[str]:
        """Full text of each SIP message the UAC sent (retransmissions included)."""
        return _logged_messages(self.messages(), method_or_code, full=True, direction="sent")

    def diagnostics(self) -> str:
        return self.proc.diagnostics() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
