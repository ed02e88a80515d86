"""pytest fixtures for the peers.  Load with (tests/conftest.py):

    pytest_plugins = ["tests.peers.fixtures"]

or ``from tests.peers.fixtures import *`` in a test module.

Fixtures
--------
kamailio            function  started Kamailio on a free port (UDP+TCP, 127.0.0.1)
rtp_pcaps           session   (pcmu_pcap, h264_pcap) Paths, 30 s each
sipp_uas_factory    function  make(scenario="uas_answer", **SippUas kwargs) -> started SippUas
                              (registered as bob at ``kamailio``); all stopped in teardown
sipp_uas            function  sipp_uas_factory("uas_answer")
sipp_uac_factory    function  make(callee="bob", scenario="uac_call", **kw) -> started SippUac (alice)
chromium            function  Playwright BrowserContext of a fresh headless /usr/bin/chromium
On failure, the logs of kamailio/sipp are printed in the teardown section.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import pytest_asyncio

from .chromium import chromium_available, launch_chromium
from .kamailio import Kamailio
from .sipp import SippUac, SippUas, sipp_available
from .util import free_port, which_or_none

__all__ = [
    "kamailio", "kamailio_sha256", "rtp_pcaps", "sipp_uas_factory", "sipp_uas", "sipp_uac_factory", "chromium",
    "require", "require_kamailio", "require_sipp", "require_chromium", "started_peers",
]


def require(missing: str | None) -> None:
    """Skip the test when a peer is ``missing`` (a reason), or fail it under
    ``CI=true``: in CI every peer must be there and nothing skips silently."""
    if missing is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required peer missing: {missing}", pytrace=False)
    pytest.skip(missing)


def require_kamailio() -> None:
    require(None if which_or_none("kamailio") else "kamailio not installed (Debian package 'kamailio')")


def require_sipp() -> None:
    require(None if sipp_available() else "sipp not installed (Debian package 'sip-tester')")


def require_chromium() -> None:
    require(None if chromium_available() else "chromium or playwright missing (Debian 'chromium', pip 'playwright')")


def _failed(request) -> bool:
    """The test failed (or has no result): its peers' logs are worth printing.
    ``rep_call`` is set by tests/conftest.py's report hook."""
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@contextlib.contextmanager
def started_peers(request, name: str) -> Iterator[list]:
    """A list for a factory fixture's started peers: on exit each is stopped
    and, when the test failed, its ``diagnostics()`` printed under ``name``."""
    made: list = []
    try:
        yield made
    finally:
        for peer in made:
            peer.stop()
        if _failed(request):
            for peer in made:
                print(f"\n===== {name} =====\n" + peer.diagnostics()[-20000:])


def _kamailio(request, tmp_path, name: str, **options) -> Iterator[Kamailio]:
    require_kamailio()
    with started_peers(request, name) as made:
        k = Kamailio(port=free_port(), workdir=tmp_path / name, **options)
        k.start()
        made.append(k)
        yield k


@pytest.fixture
def kamailio(request, tmp_path):
    yield from _kamailio(request, tmp_path, "kamailio")


@pytest.fixture
def kamailio_sha256(request, tmp_path):
    """Kamailio in its second configuration: digest with qop="auth" and
    algorithm SHA-256, logging the credentials it receives."""
    yield from _kamailio(request, tmp_path, "kamailio-sha256", qop="auth", algorithm="SHA-256")


@pytest.fixture(scope="session")
def rtp_pcaps(tmp_path_factory):
    from .media import make_h264_pcap, make_pcmu_pcap

    d = tmp_path_factory.mktemp("pcaps")
    a, v = d / "pcmu.pcap", d / "h264.pcap"
    make_pcmu_pcap(a, seconds=30)
    make_h264_pcap(v, seconds=30)
    return a, v


@pytest.fixture
def sipp_uas_factory(request, kamailio, rtp_pcaps, tmp_path):
    require_sipp()
    with started_peers(request, "sipp uas") as made:
        def make(scenario: str = "uas_answer", **kw) -> SippUas:
            kw.setdefault("audio_pcap", rtp_pcaps[0])
            kw.setdefault("video_pcap", rtp_pcaps[1])
            kw.setdefault("workdir", tmp_path / f"sipp_uas_{len(made)}")
            uas = SippUas(kamailio, scenario, **kw)
            made.append(uas)
            uas.start()
            return uas

        yield make


@pytest.fixture
def sipp_uas(sipp_uas_factory):
    return sipp_uas_factory("uas_answer")


@pytest.fixture
def sipp_uac_factory(request, kamailio, tmp_path):
    require_sipp()
    with started_peers(request, "sipp uac") as made:
        def make(callee: str = "bob", scenario: str = "uac_call", **kw) -> SippUac:
            kw.setdefault("workdir", tmp_path / f"sipp_uac_{len(made)}")
            uac = SippUac(kamailio, callee, scenario=scenario, **kw)
            made.append(uac)
            uac.start()
            return uac

        yield make


@pytest_asyncio.fixture
async def chromium():
    require_chromium()
    async with launch_chromium() as ctx:
        yield ctx


# ---------------------------------------------------------------------------
# baresip (tests/peers/baresip.py): a real softphone as the far end
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def baresip_video(tmp_path_factory):
    """baresip's video source: 180 s of a moving 352x288 H.264 pattern (see make_video)."""
    from .baresip import baresip_available, make_video

    if baresip_available() is not None:
        return None
    return make_video(tmp_path_factory.mktemp("baresip_video") / "pattern_352x288.mp4")


@pytest.fixture
def baresip_factory(request, tmp_path, baresip_video):
    """make(proxy=None, **Baresip kwargs) -> started Baresip (registered as bob
    at ``proxy`` when given, e.g. the ``kamailio`` fixture); all stopped in
    teardown, their logs printed when the test failed."""
    from .baresip import Baresip, baresip_available

    require(baresip_available())
    with started_peers(request, "baresip") as made:
        def make(proxy=None, **kw) -> Baresip:
            kw.setdefault("workdir", tmp_path / f"baresip_{len(made)}")
            kw.setdefault("video_file", baresip_video)
            b = Baresip(proxy, **kw)
            made.append(b)
            b.start()
            return b

        yield make


@pytest.fixture
def baresip(baresip_factory, kamailio):
    """baresip registered as bob at ``kamailio``, auto-answering with H.264 352x288 + a 440 Hz PCMU tone."""
    return baresip_factory(kamailio)


__all__ += ["baresip_video", "baresip_factory", "baresip"]
