"""A network namespace of the test's own, joined to the host by a veth pair,
so a peer's packets cross a real (impairable) link instead of loopback.

    with NetNs() as ns:                       # ip netns add sst<pid><n>; veth host <-> ns
        ns.host_ip, ns.ns_ip                  # 10.231.x.1 (host side), 10.231.x.2 (inside)
        ns.netem("loss 1% reorder 2% delay 30ms 10ms")   # on the ns side: ns -> host traffic
        ns.run(["ip", "addr"])                # a command inside the namespace
    # gone: the namespace and both veth ends

Needs root (CAP_NET_ADMIN) and iproute2 (``ip``, ``tc``); nothing outside the
namespace and the one host-side veth end is touched.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess

from .util import which_or_none

_counter = itertools.count()


class NetNsError(RuntimeError):
    pass


def netns_available() -> str | None:
    """None when network namespaces and netem can be used here, else why not."""
    if which_or_none("ip") is None or which_or_none("tc") is None:
        return "iproute2 ('ip', 'tc') not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise NetNsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _used_subnets() -> str:
    return _ip("-4", "addr", check=False).stdout + _ip("-4", "route", check=False).stdout


class NetNs:
    def __init__(self) -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.name = f"sst{tag}"
        self.host_if = f"ssh{tag}"[:15]
        self.ns_if = f"ssn{tag}"[:15]
        used = _used_subnets()
        for _ in range(100):
            third = random.randint(1, 254)
            if f"10.231.{third}." not in used:
                break
        else:
            raise NetNsError("no free 10.231.x.0/30 subnet")
        self.host_ip = f"10.231.{third}.1"
        self.ns_ip = f"10.231.{third}.2"
        self.started = False

    def start(self) -> NetNs:
        _ip("netns", "add", self.name)
        self.started = True
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.run(["ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if])
            self.run(["ip", "link", "set", self.ns_if, "up"])
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """``cmd`` inside the namespace."""
        result = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                                timeout=30)
        if check and result.returncode != 0:
            raise NetNsError(f"in {self.name}: {' '.join(cmd)}: {result.stderr.strip()}")
        return result

    def netem(self, spec: str) -> None:
        """A netem qdisc on the namespace's veth end: impairs what leaves the
        namespace (a peer inside sending toward the host)."""
        self.run(["tc", "qdisc", "replace", "dev", self.ns_if, "root", "netem", *spec.split()])

    def qdisc_stats(self) -> str:
        return self.run(["tc", "-s", "qdisc", "show", "dev", self.ns_if], check=False).stdout

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        # deleting the namespace destroys its veth end, and with it the host end
        _ip("netns", "del", self.name, check=False)
        if self.host_if in _ip("link", "show", check=False).stdout:
            _ip("link", "del", self.host_if, check=False)

    def __enter__(self) -> NetNs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
