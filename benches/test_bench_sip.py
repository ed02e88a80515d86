"""SIP parse throughput: sipstream's Rust parser through the Python API
against aiosipua (pure-Python, the most complete Python SIP parser we know)
on the same realistic corpus, in the same run.

Corpus: every ``fuzz/corpus/sip_message/*.sip`` seed (INVITE with SDP,
1xx/2xx, 401/407 with digest challenges, ACK, BYE, CANCEL, REGISTER, OPTIONS,
compact forms, multiple Via on one line and on several, folded and LF-only
messages). One benchmark round parses the whole corpus and, for each message,
reads from Python what a UA needs first: Call-ID, CSeq (number, method), the
top Via, the From tag and To. Timings are never asserted; only that both
parsers agree on those values. Both are called once per message (neither
has a batch API). Timer: this process's CPU time, pinned to one core
(benches/conftest.py). The sipstream/aiosipua ratio of the medians is printed
and stored in ``extra_info`` (``--benchmark-json``); benches/report.py takes
it from each run.

Run: ``make bench`` (all benchmarks, repeated), or once:
``.venv/bin/python -m pytest benches/test_bench_sip.py --benchmark-only -q``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sipstream._core import SipMessage

try:
    import aiosipua
except ImportError as e:  # a missing peer fails the benchmark, never skips it
    raise RuntimeError("aiosipua is missing: .venv/bin/pip install -e '.[bench]'") from e

CORPUS_DIR = Path(__file__).resolve().parent.parent / "fuzz" / "corpus" / "sip_message"
# aiosipua splits head from body at the first empty line, so it reads the
# RFC 3261 §7.5 keep-alive CRLFs before a start line as an empty message;
# strip them for both parsers (a transport would have done so anyway).
CORPUS = [p.read_bytes().lstrip(b"\r\n") for p in sorted(CORPUS_DIR.glob("*.sip"))]

Summary = tuple[str | None, tuple[int, str] | None, str | None, str | None, str | None]

# msg/s of each parser, filled by the tests below (run in file order).
_RATES: dict[str, float] = {}


def sipstream_read(data: bytes) -> Summary:
    # from_tag is NameAddr.parse(m.header("From")).tag() done in Rust
    # without building a NameAddr (None when there is no From).
    m = SipMessage.parse(data)
    return m.call_id, m.cseq, m.header("Via"), m.from_tag, m.header("To")


def aiosipua_read(data: bytes) -> Summary:
    m = aiosipua.SipMessage.parse(data)
    cseq = m.cseq
    from_ = m.from_addr
    return (
        m.call_id,
        (cseq.seq, cseq.method) if cseq is not None else None,
        m.get_header("Via"),
        from_.tag if from_ is not None else None,
        m.get_header("To"),
    )


def _parse_corpus(read: Any) -> list[Summary]:
    return [read(data) for data in CORPUS]


def _record(name: str, benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    rate = len(CORPUS) / benchmark.stats.stats.median
    _RATES[name] = rate
    benchmark.extra_info["api"] = f"{name} parse + 5 reads (per message)"
    benchmark.extra_info["messages_per_round"] = len(CORPUS)
    benchmark.extra_info["msg_per_s"] = round(rate)
    with capsys.disabled():
        print(f"\n{name}: {rate:,.0f} msg/s (parse + Call-ID, CSeq, top Via, From tag, To)")
        if len(_RATES) == 2:
            ratio = _RATES["sipstream"] / _RATES["aiosipua"]
            benchmark.extra_info["sipstream_over_aiosipua"] = round(ratio, 1)
            print(f"sipstream / aiosipua: {ratio:.1f}x")


def test_corpus_parses_identically() -> None:
    """Both parsers read the same values from every corpus message."""
    assert len(CORPUS) >= 30
    ours = _parse_corpus(sipstream_read)
    theirs = _parse_corpus(aiosipua_read)
    assert ours == theirs
    assert all(call_id and cseq and via for call_id, cseq, via, _, _ in ours)


@pytest.mark.benchmark(group="sip-parse")
def test_sip_parse_corpus_aiosipua(benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = benchmark(_parse_corpus, aiosipua_read)
    assert len(result) == len(CORPUS)
    _record("aiosipua", benchmark, capsys)


@pytest.mark.benchmark(group="sip-parse")
def test_sip_parse_corpus_sipstream(benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = benchmark(_parse_corpus, sipstream_read)
    assert result == _parse_corpus(aiosipua_read)
    _record("sipstream", benchmark, capsys)
