"""Test helpers shipped with the package: a loopback SIP callee that answers
and streams an H.264 test pattern and a tone (used by ``sipstream demo``)."""

from .callee import Impairment, LoopbackCallee

__all__ = ["Impairment", "LoopbackCallee"]
