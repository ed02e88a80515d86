"""Kamailio as the SIP registrar + authenticating proxy for tests.

    with Kamailio(port=15060) as k:          # or k = Kamailio(); k.start(); ... k.stop()
        k.port, k.host, k.domain             # 15060, "127.0.0.1", "sipstream.test"
        k.log_text()                         # everything kamailio logged (stderr)
        k.registered("bob")                  # True once bob's REGISTER was accepted

Users (realm ``sipstream.test``): alice/alice-secret (caller = sipstream),
bob/bob-secret (callee = sipp).  Listens on UDP and TCP 127.0.0.1:<port>.

Digest is MD5 without qop by default.  A second configuration:

    Kamailio(port, qop="auth", algorithm="SHA-256")   # RFC 8760 SHA-256, qop=auth
    k.credentials("REGISTER")    # the Authorization headers kamailio received
                                 # (logged when qop/algorithm/log_credentials is set)

sipp (3.6) answers only MD5 challenges, so bob cannot register through a
SHA-256 Kamailio: register a test callee with :func:`register` instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .util import LOOPBACK, sip_options_ping, terminate_process, which_or_none

CFG_PATH = Path(__file__).resolve().parent / "kamailio.cfg"

DOMAIN = "sipstream.test"
REALM = "sipstream.test"
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


class KamailioError(RuntimeError):
    pass


class Kamailio:
    binary_name = "kamailio"

    def __init__(
        self,
        port: int = 15060,
        workdir: os.PathLike | str | None = None,
        cfg: os.PathLike | str | None = None,
        start_timeout: float = 5.0,
        debug: int = 2,
        qop: str = "",
        algorithm: str = "",
        log_credentials: bool | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = int(port)
        self.domain = DOMAIN
        self.realm = REALM
        self.users = dict(USERS)
        self.cfg = Path(cfg) if cfg else CFG_PATH
        self.start_timeout = start_timeout
        self.debug = debug
        if qop not in ("", "auth", "auth-int"):
            raise ValueError(f"qop must be '', 'auth' or 'auth-int', not {qop!r}")
        if algorithm not in ("", "MD5", "SHA-256"):
            raise ValueError(f"algorithm must be '', 'MD5' or 'SHA-256', not {algorithm!r}")
        self.qop = qop
        self.algorithm = algorithm or "MD5"
        self._algorithm_set = bool(algorithm)
        self.log_credentials = bool(qop or algorithm) if log_credentials is None else log_credentials
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log_fh = None

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def available() -> bool:
        return which_or_none("kamailio") is not None

    @property
    def address(self) -> str:
        """host:port of the proxy."""
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def log_text(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def registered(self, user: str) -> bool:
        return re.search(rf"REGISTERED sip:{re.escape(user)}@", self.log_text()) is not None

    def diagnostics(self) -> str:
        return self.log_text()

    def registrations(self, user: str) -> list[str]:
        """The Expires header of each REGISTER of ``user`` accepted, in order
        ("0" for an un-REGISTER)."""
        return re.findall(rf"REGISTERED sip:{re.escape(user)}@\S+ contact .* expires <([^>]*)>", self.log_text())

    def credentials(self, method: str) -> list[str]:
        """The Authorization (REGISTER) or Proxy-Authorization (other methods)
        header values of the ``method`` requests kamailio received, in order;
        logged only with ``log_credentials``."""
        header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        return re.findall(rf"CREDENTIALS {re.escape(method)} {header}: (.*)$", self.log_text(), re.MULTILINE)

    def _defines(self) -> list[str]:
        """Preprocessor defines (-A) of kamailio.cfg for the non-default configuration."""
        args = []
        if self.qop:
            flags = {"auth": 1, "auth-int": 2}[self.qop]
            args += ["-A", f'AUTH_QOP="{self.qop}"', "-A", f'AUTH_CHALLENGE_FLAGS="{flags}"']
        if self._algorithm_set:
            args += ["-A", f'AUTH_ALGORITHM="{self.algorithm}"']
        if self.log_credentials:
            args += ["-A", "LOG_CREDENTIALS"]
        return args

    # -- lifecycle -------------------------------------------------------
    def start(self) -> Kamailio:
        if self.proc is not None:
            raise KamailioError("already started")
        binary = which_or_none(self.binary_name)
        if binary is None:
            raise KamailioError("kamailio binary not found (Debian package 'kamailio')")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sipstream-kamailio-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        rundir = self.workdir / "run"
        rundir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "kamailio.log"
        self._log_fh = open(self.log_path, "wb")
        cmd = [
            binary,
            "-DD",                      # stay in foreground, do not daemonize
            "-E",                       # log to stderr
            "-f", str(self.cfg),
            "-l", f"udp:{self.host}:{self.port}",
            "-l", f"tcp:{self.host}:{self.port}",
            f"--alias={self.host}:{self.port}",
            "-w", str(self.workdir),    # working dir (core files etc)
            "-Y", str(rundir),          # runtime dir (ctl sockets...)
            "-P", str(rundir / "kamailio.pid"),
            "-m", "64",                 # shm MB
            "-M", "8",                  # pkg MB
            "--debug", str(self.debug),
            *self._defines(),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            start_new_session=True,     # own process group -> clean kill of children
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_text()
                self._close()
                raise KamailioError(f"kamailio exited with {self.proc.returncode}:\n{log[-4000:]}")
            if sip_options_ping(self.host, self.port, timeout=0.2):
                return self
            time.sleep(0.05)
        log = self.log_text()
        self.stop()
        raise KamailioError(f"kamailio did not answer OPTIONS within {self.start_timeout}s:\n{log[-4000:]}")

    def _close(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop(self) -> None:
        if self.proc is not None:
            terminate_process(self.proc, timeout=5.0)
        self._close()

    def cleanup(self) -> None:
        """stop() and remove the work dir if we created it."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def digest_fields(challenge: str) -> dict[str, str]:
    """The parameters of a Digest challenge or credentials, names lowercased."""
    return {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge)}


def register(kamailio: Kamailio, user: str, contact_port: int, password: str | None = None,
             expires: int = 3600, timeout: float = 5.0) -> str:
    """REGISTER ``user`` at ``kamailio`` over UDP with Contact
    ``sip:user@127.0.0.1:contact_port``, answering the digest challenge with
    hashlib (MD5 or SHA-256, qop=auth when offered): independent of
    sipstream's digest code and of sipp (which knows MD5 only).  Returns the
    Authorization header it sent; raises KamailioError unless the answer is 200."""
    password = kamailio.users[user] if password is None else password
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        call_id = secrets.token_hex(8)
        uri = f"sip:{kamailio.domain}"

        def send(cseq: int, auth: str | None) -> tuple[int, str]:
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
                "Max-Forwards: 70",
                f"From: <sip:{user}@{kamailio.domain}>;tag={secrets.token_hex(4)}",
                f"To: <sip:{user}@{kamailio.domain}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:{user}@{LOOPBACK}:{contact_port}>",
                f"Expires: {expires}",
            ]
            if auth:
                lines.append(f"Authorization: {auth}")
            lines.append("Content-Length: 0")
            sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (kamailio.host, kamailio.port))
            while True:
                data = sock.recv(65535).decode("utf-8", "replace")
                status = int(data.split(" ", 2)[1])
                if status >= 200:
                    return status, data

        status, answer = send(1, None)
        if status != 401:
            raise KamailioError(f"REGISTER {user}: expected a 401 challenge, got:\n{answer}")
        challenge = re.search(r"^WWW-Authenticate:\s*Digest\s+(.*)$", answer, re.MULTILINE | re.IGNORECASE)
        if challenge is None:
            raise KamailioError(f"REGISTER {user}: 401 without a Digest challenge:\n{answer}")
        f = digest_fields(challenge.group(1).strip())
        algorithm = f.get("algorithm", "MD5")
        h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

        def hx(text: str) -> str:
            return h(text.encode()).hexdigest()

        ha1, ha2 = hx(f"{user}:{f['realm']}:{password}"), hx(f"REGISTER:{uri}")
        auth = f'Digest username="{user}", realm="{f["realm"]}", nonce="{f["nonce"]}", uri="{uri}"'
        if "auth" in f.get("qop", "").split(","):
            cnonce, nc = secrets.token_hex(8), "00000001"
            response = hx(f"{ha1}:{f['nonce']}:{nc}:{cnonce}:auth:{ha2}")
            auth += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            response = hx(f"{ha1}:{f['nonce']}:{ha2}")
        auth += f', response="{response}", algorithm={algorithm}'
        if "opaque" in f:
            auth += f', opaque="{f["opaque"]}"'
        status, answer = send(2, auth)
        if status != 200:
            raise KamailioError(f"REGISTER {user} with {auth}: got\n{answer}")
        return auth
