"""File descriptors: the server's soft ``RLIMIT_NOFILE`` is raised to the hard
limit at start, and a call starts only while enough fds stay free for it and
for the HTTP API, so that running out says so instead of looking like a
full media port range or a server that stopped accepting connections."""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger(__name__)

# What one call holds: 4 media sockets, the Rust reactor's share, SIP over
# TCP, a recording file (measured: about 9).
FDS_PER_CALL = 12
# Kept free for HTTP connections, hook POSTs, log files and the like.
FDS_RESERVED = 64


class OutOfFileDescriptors(Exception):
    """Starting one more call would leave too few fds."""


def raise_nofile_limit() -> int:
    """Raise the soft limit to the hard one (the most an unprivileged
    process may); returns the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return soft


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: assume none are open rather than refuse calls
        return 0


def fds_available_for_call() -> bool:
    try:
        check_fds_for_call()
    except OutOfFileDescriptors:
        return False
    return True


def check_fds_for_call() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    used = open_fds()
    if used + FDS_PER_CALL + FDS_RESERVED > soft:
        raise OutOfFileDescriptors(
            f"out of file descriptors: {used} of the {soft} allowed (RLIMIT_NOFILE) are open; "
            f"raise LimitNOFILE / ulimit -n")
