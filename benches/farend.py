"""The far ends the whole-process benchmarks call (benches/endurance.py,
benches/sip_load.py): what a call's /call/startup body says, and which SIP
requests the far end received.

- ``LoopbackFarEnd``: sipstream's own ``LoopbackCallee`` in the benchmark's
  process, dialled directly (no registration).
- ``KamailioSippFarEnd``: Debian's Kamailio as registrar and proxy, and one
  sipp UAS registered behind it as ``bob`` (tests/peers: the same peers the
  tests use). sipstream registers as ``alice`` and calls bob through the
  proxy; sipp answers every call and streams PCMU (its rtp_stream engine) and
  H.264 (``play_pcap_video``, a raw socket: root) to the caller's SDP offer.
  With ``media="sink"`` sipp only signals (its SDP answer names the test's
  RTCP sinks) and the benchmark sends the media itself to ``media_ports()``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class LoopbackFarEnd:
    name = "loopback"

    def __init__(self, callee: Any) -> None:
        self.callee = callee

    @classmethod
    async def start(cls, width: int, height: int, loop_seconds: float) -> LoopbackFarEnd:
        from sipstream.testing import LoopbackCallee

        callee = LoopbackCallee(width=width, height=height, loop_seconds=loop_seconds)
        await callee.start()
        return cls(callee)

    def body(self, call_id: str, stream: str) -> dict[str, str]:
        return {"callId": call_id, "callee": "endurance", "toStream": stream, "hasAudio": "true",
                "hasVideo": "true", "sipLogin": "endurance", "sipDomain": "127.0.0.1",
                "sipPort": str(self.callee.port), "sipRegisterRequired": "false", "appKey": "defaultApp"}

    def sip_ids(self, method: str) -> set[str]:
        """The Call-IDs of the ``method`` requests the far end received."""
        return {m.call_id for m in self.callee.requests if m.method == method}

    async def stop(self) -> None:
        await self.callee.stop()


_CALL_ID = re.compile(r"^(?:Call-ID|i)\s*:\s*(\S+)", re.M | re.I)
_M_AUDIO = re.compile(r"^m=audio (\d+) ", re.M)
_M_VIDEO = re.compile(r"^m=video (\d+) ", re.M)


class KamailioSippFarEnd:
    name = "kamailio+sipp"

    def __init__(self, workdir: Path, calls: int, media_seconds: float, bye_timeout_s: float,
                 media: str) -> None:
        from tests.peers.kamailio import Kamailio
        from tests.peers.sipp import SippUas
        from tests.peers.util import free_port

        self.kamailio = Kamailio(port=free_port(udp=True, tcp=True), workdir=workdir / "kamailio", debug=1)
        # -m: the UAS takes this many calls before it exits (the peer class's default is one)
        self.uas = SippUas(self.kamailio, "uas_answer", media=media, media_seconds=media_seconds, answer_delay_ms=0,
                           bye_timeout_s=bye_timeout_s, extra_args=["-m", str(calls)],
                           workdir=workdir / "sipp")

    @classmethod
    async def start(cls, workdir: Path, calls: int, media_seconds: float,
                    bye_timeout_s: float = 3600, media: str = "sipp") -> KamailioSippFarEnd:
        """``media``: "sipp" (sipp streams every call) or "sink" (sipp sends nothing)."""
        (workdir / "kamailio").mkdir(parents=True, exist_ok=True)
        (workdir / "sipp").mkdir(parents=True, exist_ok=True)
        far = cls(workdir, calls, media_seconds, bye_timeout_s, media)
        far.kamailio.start()
        try:
            far.uas.start()
        except BaseException:
            far.kamailio.stop()
            raise
        return far

    def body(self, call_id: str, stream: str) -> dict[str, str]:
        return {"callId": call_id, "callee": "bob", "toStream": stream, "hasAudio": "true", "hasVideo": "true",
                "sipLogin": "alice", "sipAuthenticationName": "alice", "sipPassword": "alice-secret",
                "sipDomain": self.kamailio.domain, "sipOutboundProxy": self.kamailio.host,
                "sipPort": str(self.kamailio.port), "sipRegisterRequired": "true", "appKey": "defaultApp"}

    def sip_ids(self, method: str) -> set[str]:
        """The Call-IDs of the ``method`` requests sipp received (its message trace)."""
        return {m.group(1) for text in self.uas.received_messages(method) if (m := _CALL_ID.search(text))}

    def media_ports(self) -> dict[str, tuple[int, int]]:
        """{Call-ID: (audio RTP port, video RTP port)} from each INVITE's SDP offer
        (the caller's ports, on 127.0.0.1)."""
        out: dict[str, tuple[int, int]] = {}
        for text in self.uas.received_messages("INVITE"):
            call_id, audio, video = _CALL_ID.search(text), _M_AUDIO.search(text), _M_VIDEO.search(text)
            if call_id and audio and video:
                out[call_id.group(1)] = (int(audio.group(1)), int(video.group(1)))
        return out

    @property
    def sipp_pid(self) -> int | None:
        """The UAS sipp's process (it streams every call's media)."""
        return self.uas.uas.proc.pid if self.uas.uas and self.uas.uas.proc else None

    async def stop(self) -> None:
        self.uas.stop()
        self.kamailio.stop()
