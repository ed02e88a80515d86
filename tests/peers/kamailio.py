"""Kamailio as the SIP registrar + authenticating proxy for tests.

    with Kamailio(port=15060) as k:          # or k = Kamailio(); k.start(); ... k.stop()
        k.port, k.host, k.domain             # 15060, "127.0.0.1", "sipstream.test"
        k.log_text()                         # everything kamailio logged (stderr)
        k.registered("bob")                  # True once bob's REGISTER was accepted

Users (realm ``sipstream.test``): alice/alice-secret (caller = sipstream),
bob/bob-secret (callee = sipp).  Listens on UDP and TCP 127.0.0.1:<port>.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .util import LOOPBACK, sip_options_ping, terminate_process, which_or_none

CFG_PATH = Path(__file__).resolve().parent / "kamailio.cfg"

DOMAIN = "sipstream.test"
REALM = "sipstream.test"
USERS = {"alice": "alice-secret", "bob": "bob-secret"}


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
    ) -> None:
        self.host = LOOPBACK
        self.port = int(port)
        self.domain = DOMAIN
        self.realm = REALM
        self.users = dict(USERS)
        self.cfg = Path(cfg) if cfg else CFG_PATH
        self.start_timeout = start_timeout
        self.debug = debug
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
