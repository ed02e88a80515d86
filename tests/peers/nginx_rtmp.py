"""nginx + nginx-rtmp-module as the RTMP server that sipstream relays to.

    with NginxRtmp() as srv:                  # or srv = NginxRtmp(); srv.start(); ... srv.stop()
        srv.url                               # "rtmp://127.0.0.1:PORT/live"
        srv.stream_url("cam1")                # "rtmp://127.0.0.1:PORT/live/cam1" (publish/play here)
        srv.recordings("cam1")                # [Path(".../rec/cam1-1700000000.flv"), ...]
        srv.restart()                         # stop + start on the SAME port, rec dir kept
        srv.log_text()                        # nginx's error log (info level)

    NginxRtmp(allow_publish=False)            # every publish is refused ("deny publish all")

Runs ``nginx -g 'daemon off;' -c <tmp>/nginx.conf -p <tmp>/ -e <tmp>/logs/error.log`` as
its own process group (master + 1 worker) with only an ``rtmp {}`` block (no http):
RTMP on 127.0.0.1:<free port>, application ``live`` with ``live on`` and ``record all`` to
``<tmp>/rec`` (``record_unique on`` -> ``<stream>-<unix seconds>.flv``).  Debian packages:
``nginx libnginx-mod-rtmp`` (module at /usr/lib/nginx/modules/ngx_rtmp_module.so).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .util import LOOPBACK, free_port, terminate_process, which_or_none

RTMP_MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
)
APP = "live"


class NginxRtmpError(RuntimeError):
    pass


def nginx_binary() -> str | None:
    return which_or_none("nginx")


def rtmp_module_path() -> str | None:
    for p in RTMP_MODULE_CANDIDATES:
        if os.path.exists(p):
            return p
    return None


def nginx_rtmp_missing() -> str | None:
    """None when nginx + the RTMP module are installed, else a skip reason."""
    if nginx_binary() is None:
        return "nginx not installed (Debian packages 'nginx libnginx-mod-rtmp')"
    if rtmp_module_path() is None:
        return "nginx RTMP module missing (Debian package 'libnginx-mod-rtmp')"
    return None


def _tcp_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class NginxRtmp:
    """A private nginx-rtmp server on loopback.  See the module docstring."""

    def __init__(
        self,
        port: int | None = None,
        *,
        allow_publish: bool = True,
        allow_play: bool = True,
        record: bool = True,
        workdir: os.PathLike | str | None = None,
        start_timeout: float = 5.0,
        extra_app_directives: str = "",
    ) -> None:
        self.host = LOOPBACK
        self.port = int(port) if port else free_port(udp=False, tcp=True)
        self.app = APP
        self.allow_publish = allow_publish
        self.allow_play = allow_play
        self.record = record
        self.start_timeout = start_timeout
        self.extra_app_directives = extra_app_directives
        self._own_workdir = workdir is None
        self.workdir: Path | None = Path(workdir) if workdir else None
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- paths --------------------------------------------------------------
    @property
    def url(self) -> str:
        """``rtmp://127.0.0.1:PORT/live`` (append ``/<stream>`` to publish/play)."""
        return f"rtmp://{self.host}:{self.port}/{self.app}"

    def stream_url(self, stream: str) -> str:
        return f"{self.url}/{stream}"

    @property
    def rec_dir(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "rec"

    @property
    def conf_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "nginx.conf"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "logs" / "error.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def recordings(self, stream: str) -> list[Path]:
        """The .flv files recorded for ``stream`` (finished or still being written),
        oldest first.  Matches ``<stream>-<digits>.flv`` (and ``<stream>.flv``)."""
        if self.workdir is None or not self.rec_dir.is_dir():
            return []
        pat = re.compile(rf"^{re.escape(stream)}(-\d+)?\.flv$")
        files = [p for p in self.rec_dir.iterdir() if pat.match(p.name)]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def wait_recording(self, stream: str, timeout: float = 10.0, min_bytes: int = 1,
                       count: int = 1) -> Path | None:
        """Wait until ``count`` recordings of ``stream`` exist and the newest has at least
        ``min_bytes``; returns the newest (None on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.recordings(stream)
            if len(recs) >= count and recs[-1].stat().st_size >= min_bytes:
                return recs[-1]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_recording_stable(self, stream: str, timeout: float = 10.0, quiet_s: float = 0.5) -> Path | None:
        """Wait until the newest recording of ``stream`` has not grown for ``quiet_s`` (the
        publisher stopped or stalled); returns it (None on timeout / no recording).  nginx-rtmp
        writes every FLV tag straight to the file, so a stable file is complete up to there."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            recs = self.recordings(stream)
            if recs:
                st = recs[-1].stat()
                key = (recs[-1], st.st_size, st.st_mtime_ns)
                if key != last:
                    last, since = key, time.monotonic()
                elif time.monotonic() - since >= quiet_s:
                    return recs[-1]
            time.sleep(0.05)
        return None

    def published(self, stream: str) -> int:
        """How many publish commands for ``stream`` nginx logged (accepted or refused)."""
        return self.log_text().count(f"publish: name='{stream}'")

    # -- config -------------------------------------------------------------
    def _config(self) -> str:
        assert self.workdir is not None
        user = ""
        if os.geteuid() == 0:
            # a root master would switch the worker to nobody/www-data, which cannot
            # write into our 0700 temp dir
            import grp
            import pwd
            user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
        publish = "allow publish 127.0.0.1;\n            deny publish all;" if self.allow_publish \
            else "deny publish all;"
        play = "allow play 127.0.0.1;\n            deny play all;" if self.allow_play else "deny play all;"
        rec = (f"record all;\n            record_path {self.rec_dir};\n"
               "            record_unique on;\n            record_append off;") \
            if self.record and self.allow_publish else "record off;"
        return f"""\
load_module {rtmp_module_path()};
{user}worker_processes 1;
pid {self.workdir / 'nginx.pid'};
error_log {self.log_path} info;

events {{
    worker_connections 256;
}}

rtmp {{
    server {{
        listen {self.host}:{self.port};
        chunk_size 4096;
        application {self.app} {{
            live on;
            {rec}
            {publish}
            {play}
            {self.extra_app_directives}
        }}
    }}
}}
"""

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> NginxRtmp:
        if self.proc is not None and self.proc.poll() is None:
            return self
        reason = nginx_rtmp_missing()
        if reason:
            raise NginxRtmpError(reason)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sipstream-nginx-rtmp-"))
        for sub in ("logs", "rec", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._config())
        deadline = time.monotonic() + self.start_timeout
        cmd = [nginx_binary(), "-g", "daemon off;", "-c", str(self.conf_path),
               "-p", str(self.workdir) + "/", "-e", str(self.log_path)]
        with open(self.workdir / "logs" / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True, cwd=self.workdir)
        self.starts += 1
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _tcp_open(self.host, self.port):
                return self
            time.sleep(0.02)
        rc = self.proc.poll()
        self.stop()
        stderr = (self.workdir / "logs" / "stderr.log").read_text(errors="replace")
        raise NginxRtmpError(f"nginx-rtmp did not start on {self.host}:{self.port} (rc={rc})\n"
                             f"{stderr}\n{self.log_text()[-4000:]}")

    def stop(self, graceful_timeout: float = 0.5, timeout: float = 3.0) -> int | None:
        """SIGQUIT (graceful: idle nginx exits in a few ms) and wait ``graceful_timeout`` s,
        then SIGTERM (fast shutdown: drops RTMP sessions; a graceful nginx-rtmp never exits
        while a publisher/player is connected), then SIGKILL on the whole process group.
        Recordings are plain appended FLV and stay readable.  Nothing of this nginx is left
        running.  ``graceful_timeout=0`` sends SIGTERM straight away."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None and graceful_timeout > 0:
            try:
                os.killpg(proc.pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=graceful_timeout)
            except subprocess.TimeoutExpired:
                pass
        rc = terminate_process(proc, timeout=timeout, sig=signal.SIGTERM)
        try:  # workers of an exited master (same process group)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return rc

    def restart(self, down_s: float = 0.0, graceful_timeout: float = 0.0) -> NginxRtmp:
        """Stop (by default at once with SIGTERM, so connected publishers see their TCP
        connection close immediately), stay down ``down_s`` seconds (connections to the port
        are refused meanwhile), then start again on the SAME port with the same config.
        The rec dir and its files stay; a new publish makes a new ``<stream>-<ts>.flv``."""
        self.stop(graceful_timeout=graceful_timeout)
        if down_s > 0:
            time.sleep(down_s)
        return self.start()

    def close(self) -> None:
        """stop() and remove the temp dir (if this object made it)."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> NginxRtmp:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def diagnostics(self) -> str:
        files = sorted(p.name for p in self.rec_dir.iterdir()) if self.workdir and self.rec_dir.is_dir() else []
        return (f"nginx-rtmp {self.url} running={self.running} starts={self.starts}\n"
                f"recordings: {files}\n--- error.log (tail) ---\n{self.log_text()[-4000:]}")
