"""Test peers for sipstream: Kamailio (SIP proxy/registrar), sipp (callee bob,
stand-in caller alice), generated RTP pcaps, headless Chromium (WHEP player),
and an isolated network namespace for Chromium WebRTC.

Nothing here imports ``sipstream``; the peers are independent of the code
under test.  See README.md in this directory.
"""

from pathlib import Path

from .util import free_port, free_udp_port_pair, which_or_none  # noqa: F401

PEERS_DIR = Path(__file__).resolve().parent
SCENARIOS_DIR = PEERS_DIR / "scenarios"
