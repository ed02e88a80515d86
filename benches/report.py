"""The BENCHMARKS.md tables from a results folder written by benches/run.py.

    .venv/bin/python benches/report.py [RESULTS_DIR]            # print the tables
    .venv/bin/python benches/report.py [RESULTS_DIR] --write    # and put them in BENCHMARKS.md
    .venv/bin/python benches/report.py FIRST --compare SECOND   # does SECOND reproduce FIRST?

RESULTS_DIR defaults to benches/results/latest. Each figure is computed per
run (a ratio always from the two sides of one run), then published as the
median and the range (min-max) over the runs. A run that failed (non-zero
exit, or a calls size not sustained) gives no value and is counted apart.
``--compare`` says, figure by figure, whether the second folder's median
lies within the first one's range."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START, END = "<!-- bench-tables:start -->", "<!-- bench-tables:end -->"
CALLS_MAX_MISSING = 0.01  # as MAX_MISSING in test_bench_calls.py

Run = dict[str, Any]  # one run's JSON: {benchmark name: benchmark dict}, or {"rust": ...}


@dataclass
class Figure:
    name: str
    compared: str  # what is compared, and which API
    unit: str
    fmt: str
    get: Callable[[Run], float | None]
    values: list[float] = field(default_factory=list)
    failed: int = 0


@dataclass
class Bench:
    key: str
    title: str
    command: str
    about: str
    figures: list[Figure]


def _median_s(name: str) -> Callable[[Run], float | None]:
    return lambda run: run[name]["stats"]["median"] if name in run else None


def _per(name: str, scale: float, per_key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        b = run.get(name)
        return None if b is None else b["stats"]["median"] / b["extra_info"][per_key] * scale
    return get


def _rate(name: str, per_key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        b = run.get(name)
        return None if b is None else b["extra_info"][per_key] / b["stats"]["median"]
    return get


def _ratio(num: Callable[[Run], float | None], den: Callable[[Run], float | None]) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        a, b = num(run), den(run)
        return None if a is None or b is None else a / b
    return get


def _extra(name: str, key: str, ok: Callable[[dict[str, Any]], bool] = lambda e: True) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        b = run.get(name)
        if b is None or key not in b["extra_info"] or not ok(b["extra_info"]):
            return None
        return float(b["extra_info"][key])
    return get


def _rust(variant: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        inner = run.get("rust", {}).get(variant)
        return statistics.median(r["packets_per_cpu_s"] for r in inner) if inner else None
    return get


def _viewers_figures() -> list[Figure]:
    """The viewer benchmark's rows, for the sizes benches/test_bench_viewers.py measures."""
    text = (HERE / "test_bench_viewers.py").read_text()

    def const(name: str) -> list[int]:
        m = re.search(rf"^{name} = \[([\d, ]*)\]", text, re.M)
        return [int(x) for x in m[1].split(",") if x.strip()] if m else []

    m = re.search(r"^CASES = \[(.*?)\]", text, re.M | re.S)
    cases = re.findall(r'"(\w+)-(\d+)"', m[1]) if m else []
    sizes = sorted(int(n) for k, n in cases if k == "engine")
    aiortc_sizes = sorted(int(n) for k, n in cases if k == "aiortc")
    joins, memory = const("JOINS_AT"), const("MEMORY_AT")
    engine = {n: f"test_viewers[engine-{n}]" for n in sizes}

    def sustained(e: dict[str, Any]) -> bool:
        return bool(e.get("sustained"))

    def ms(name: str, key: str) -> Callable[[Run], float | None]:
        get = _extra(name, key)
        return lambda run: None if (v := get(run)) is None else v / 1000

    us = {n: _extra(engine[n], "us_per_viewer_packet", sustained) for n in sizes}
    floor = {n: _extra(f"test_viewers[floor-{n}]", "us_per_packet") for n in sizes}
    figs: list[Figure] = []
    for n in sizes:
        figs.append(Figure(f"{n} viewers", "engine: server CPU (every thread) / RTP packets the viewers received",
                           "µs/viewer-packet", "{:.2f}", us[n]))
    for n in sizes:
        figs.append(Figure(f"{n} viewers: viewers per core", "1e6 / (µs per viewer-packet × packets/s per viewer)",
                           "viewers/core", "{:,.0f}", _extra(engine[n], "viewers_per_core", sustained)))
    for n in sizes:
        figs.append(Figure(f"{n} viewers: connected", "whep_load: ICE + DTLS up within 15 s of the POST", "viewers",
                           "{:,.0f}", _extra(engine[n], "connected")))
    for n in sizes:
        figs.append(Figure(f"{n} viewers: delivery", "RTP received / expected from sequence numbers (goal ≥ 0.999)",
                           "fraction", "{:.5f}", _extra(engine[n], "delivery")))
    for n in sizes:
        figs.append(Figure(f"{n} viewers: floor", "sendmmsg_floor: same datagram rate, 1100-1200 B, 64 a sendmmsg "
                           "each 10 ms tick", "µs/packet", "{:.2f}", floor[n]))
    for n in sizes:
        figs.append(Figure(f"{n} viewers: engine / floor", "per viewer-packet / per datagram, same run (goal ≤ 1.5)",
                           "x", "{:.2f}", _ratio(us[n], floor[n])))
    for m in aiortc_sizes:
        a = _extra(f"test_viewers[aiortc-{m}]", "us_per_viewer_packet", sustained)
        figs.append(Figure(f"aiortc, {m} viewers", "benches/aiortc_whep.py: server CPU / RTP packets received",
                           "µs/viewer-packet", "{:.1f}", a))
        if m in us:
            figs.append(Figure(f"aiortc / engine, {m} viewers", "both per viewer-packet, same run (goal ≥ 10)", "x",
                               "{:.1f}", _ratio(a, us[m])))
    scale = [n for n in sizes if n > max(aiortc_sizes, default=0)]
    if aiortc_sizes and scale:
        m, n = max(aiortc_sizes), min(scale)
        figs.append(Figure(f"aiortc {m} / engine {n}", f"per viewer-packet, each at its scale: aiortc at {m} "
                           f"viewers, the engine at {n}; same run", "x", "{:.1f}",
                           _ratio(_extra(f"test_viewers[aiortc-{m}]", "us_per_viewer_packet", sustained), us[n])))
    for q in ("p50", "p99"):
        for n in sizes:
            figs.append(Figure(f"{n} viewers: latency {q}",
                               "engine: the call's RTP socket → the viewer's socket, every packet of the window "
                               "(100 µs buckets; 200.1 = over 200 ms)", "ms", "{:.1f}",
                               ms(engine[n], f"latency_{q}_us")))
    for n in joins:
        name = f"test_viewers[engine-{n}]"
        figs += [
            Figure(f"{n} joins at once: all connected", "whep_load --rate 0: first POST to last ICE+DTLS connected",
                   "s", "{:.2f}", _extra(name, "join_wall_s")),
            Figure(f"{n} joins at once: rate", "viewers connected / that time", "joins/s", "{:,.0f}",
                   _extra(name, "joins_per_s")),
            Figure(f"{n} joins at once: join p50", "POST to connected, per viewer", "ms", "{:,.0f}",
                   _extra(name, "join_p50_ms")),
            Figure(f"{n} joins at once: join p99", "POST to connected, per viewer", "ms", "{:,.0f}",
                   _extra(name, "join_p99_ms")),
        ]
    if sizes:
        first = engine[sizes[0]]
        figs += [
            Figure("stream", f"RTP packets/s per viewer, as the {sizes[0]} viewers received them", "packets/s",
                   "{:.1f}", _extra(first, "rtp_per_viewer_per_s")),
            Figure("server, no viewer", "the server with its call, before the viewers (not subtracted above)",
                   "% of a core", "{:.2f}", _extra(first, "baseline_pct_core")),
            Figure("noise", "measured core busy (/proc/stat, tick-sampled: ±5 at light load) minus the server, "
                   "the most in any window of the run (quiet: ~0)",
                   "% of a core", "{:.0f}", lambda run: max(
                       (b["extra_info"]["other_on_measured_core_pct"] for b in run.values()
                        if "other_on_measured_core_pct" in b["extra_info"]), default=None)),
        ]
    for n in memory:
        figs.append(Figure(f"memory, {n} viewers", "server RSS after the joins minus before, per WHEP session",
                           "KB/viewer", "{:.0f}", _extra(f"test_viewers[engine-{n}]", "kb_per_viewer")))
    return figs


MEDIA = "test_receive_"
SIP_A, SIP_S = "test_sip_parse_corpus_aiosipua", "test_sip_parse_corpus_sipstream"


def benches() -> list[Bench]:
    sip_a, sip_s = _rate(SIP_A, "messages_per_round"), _rate(SIP_S, "messages_per_round")
    m_batch = _per(MEDIA + "sipstream_batch", 1e6, "packets")
    m_pp = _per(MEDIA + "sipstream_per_packet", 1e6, "packets")
    m_aiortc = _per(MEDIA + "aiortc", 1e6, "packets")
    au_s, au_a = _median_s("test_rtp_h264_receive_sipstream"), _median_s("test_rtp_h264_receive_aiortc")
    rust_io, rust_all = _rust("recvmmsg only"), _rust("recvmmsg + MediaSession")
    calls = []
    sizes = re.search(r"^SIZES = \[(.*)\]", (HERE / "test_bench_calls.py").read_text(), re.M)
    for n in (int(x) for x in sizes[1].split(",")) if sizes else ():
        name = f"test_calls_per_core[{n}]"
        calls.append(Figure(
            f"{n} calls", "sipstream RtpSession → MediaIo (batch recvmmsg) → Rust stream hub; no peer", "calls/core",
            "{:,.0f}", _extra(name, "calls_per_core", lambda e: e["missing_share"] <= CALLS_MAX_MISSING)))
    return [
        Bench("sip", "SIP parsing: sipstream vs aiosipua", "benches/test_bench_sip.py",
              "34-message corpus (fuzz/corpus/sip_message), each parsed and Call-ID, CSeq, top Via, From tag "
              "and To read from Python. Process CPU time, median of each run's rounds.", [
                  Figure("sipstream / aiosipua", "both per message (SipMessage.parse vs aiosipua.SipMessage.parse)",
                         "x", "{:.1f}", _ratio(sip_s, sip_a)),
                  Figure("sipstream", "SipMessage.parse + 5 reads, per message", "msg/CPU-s", "{:,.0f}", sip_s),
                  Figure("aiosipua", "aiosipua.SipMessage.parse + 5 reads, per message", "msg/CPU-s", "{:,.0f}",
                         sip_a),
              ]),
        Bench("media", "Receive path through the Python API: sipstream vs aiortc", "benches/test_bench_media.py",
              "1580 packets of 720p-like H.264 (FU-A) + PCMU, 4 s of media, on media time; every frame out. "
              "Process CPU time, median of each run's rounds.", [
                  Figure("aiortc / sipstream batch", "aiortc per packet vs our batch API (receive_batch, 64 a call)",
                         "x", "{:.1f}", _ratio(m_aiortc, m_batch)),
                  Figure("aiortc / sipstream per packet",
                         "aiortc per packet vs our per-packet API (handle_receive + poll_output)",
                         "x", "{:.1f}", _ratio(m_aiortc, m_pp)),
                  Figure("sipstream batch", "MediaSession.receive_batch", "µs/packet", "{:.3f}", m_batch),
                  Figure("sipstream per packet", "MediaSession.handle_receive + poll_output", "µs/packet", "{:.3f}",
                         m_pp),
                  Figure("aiortc", "RtpPacket.parse + depayload + JitterBuffer.add, per packet", "µs/packet",
                         "{:.2f}", m_aiortc),
                  Figure("asyncio loopback reference", "DatagramProtocol, sockets only, per packet; sender in "
                         "another process on the other core", "µs/packet", "{:.2f}",
                         _per(MEDIA + "asyncio_loopback_reference", 1e6, "packets")),
              ]),
        Bench("receive", "One H.264 access unit, per packet: sipstream vs aiortc", "benches/test_bench_receive.py",
              "One ~40 KB IDR as FU-A packets to a whole Annex-B frame; one INVITE parsed (no peer). "
              "Process CPU time, median of each run's rounds.", [
                  Figure("aiortc / sipstream", "both per packet (MediaReceiver.push vs RtpPacket.parse + "
                         "H264PayloadDescriptor.parse)", "x", "{:.1f}", _ratio(au_a, au_s)),
                  Figure("sipstream", "MediaReceiver.push, per packet", "µs/frame", "{:.1f}",
                         lambda r: None if au_s(r) is None else au_s(r) * 1e6),  # type: ignore[operator]
                  Figure("aiortc", "RtpPacket.parse + H264PayloadDescriptor.parse, per packet", "µs/frame",
                         "{:.1f}", lambda r: None if au_a(r) is None else au_a(r) * 1e6),  # type: ignore[operator]
                  Figure("SIP INVITE", "SipMessage.parse + 3 reads; no peer", "µs/message", "{:.2f}",
                         lambda r: None if "test_sip_parse_sipstream" not in r
                         else r["test_sip_parse_sipstream"]["stats"]["median"] * 1e6),
              ]),
        Bench("rust", "Socket → frame, pure Rust", "target/release/examples/rtp_receive_throughput",
              "20 s of the same 720p-like sequence queued on a loopback socket in chunks of 1000, then drained; "
              "CPU time of the receiving thread (the send excluded), median of the example's 3 passes. No peer: "
              "recvmmsg alone is the reference.", [
                  Figure("recvmmsg / whole path", "recvmmsg alone vs recvmmsg + MediaSession, batches of recvmmsg",
                         "x", "{:.2f}", _ratio(rust_io, rust_all)),
                  Figure("whole path", "recvmmsg + MediaSession", "packets/CPU-s", "{:,.0f}", rust_all),
                  Figure("recvmmsg alone", "RecvBatch::recv", "packets/CPU-s", "{:,.0f}", rust_io),
              ]),
        Bench("calls", "Whole process: calls' worth of RTP received per core", "benches/test_bench_calls.py",
              "N production RtpSessions (PCMU + H.264, default settings) fed by rust/examples/rtp_blaster in another "
              "process on the other core, 50 + 250 packets/s a call; this process's CPU (getrusage, all threads) over "
              "a 5 s window after 3 s of warm-up. Only frames built from received RTP count (the generator's are "
              "subtracted), and CPU per call is over the calls' worth of frames the window received. A size fails when "
              "more than 1% of the frames sent never came out, or the sender ran more than 500 ms late.", calls),
        Bench("rtmp", "CPU per RTMP relay", "benches/test_bench_rtmp.py",
              "One call (loopback callee in another process, H.264 320x240 25 fps + PCMU) relayed 8 times to "
              "nginx-rtmp (on the other core); this process's CPU over 5 s with the 8 relays minus 5 s with none, "
              "over 8. No peer.", [
                  Figure("per relay", "AAC encode + FLV mux, writers fed every 100 ms (batch)", "% of a core",
                         "{:.2f}", _extra("test_cpu_per_rtmp_relay", "per_relay_pct_core")),
                  Figure("call alone", "the received call, no relay", "% of a core", "{:.2f}",
                         _extra("test_cpu_per_rtmp_relay", "baseline_pct_core")),
              ]),
        Bench("viewers", "WebRTC viewers per core: Rust engine vs the kernel floor and aiortc",
              "benches/test_bench_viewers.py",
              "One call (loopback callee in another process on the other core: H.264 640x360 25 fps + PCMU, "
              "~90 RTP packets/s) played to N WHEP viewers (rust/examples/whep_load on the other core: real ICE, "
              "DTLS, one socket a viewer, all joining at once); the whole server process's CPU (/proc, every thread) "
              "over an 8 s window 3 s after the last viewer connected, per RTP packet the viewers received. The "
              "floor is rust/examples/sendmmsg_floor (no RTP, no SRTP) pushing the same datagram rate to N sockets "
              "drained like whep_load drains its; aiortc is the same server with benches/aiortc_whep.py. On loopback "
              "the receive softirq runs in the sender and counts as its CPU, in all three.", _viewers_figures()),
    ]


def _failed_tests(junit: Path) -> set[str]:
    if not junit.exists():
        return set()
    return {case.get("name", "") for case in ElementTree.parse(junit).iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None}


def _load_runs(folder: Path, key: str, index: dict[str, Any]) -> tuple[list[Run], int]:
    """The runs of one benchmark (without the tests that failed), and how
    many runs left no result at all."""
    runs, lost = [], 0
    for entry in index["runs"]:
        if entry["bench"] != key:
            continue
        path = folder / entry["json"]
        if not path.exists():
            lost += 1
            continue
        data = json.loads(path.read_text())
        if key == "rust":
            runs.append(data if entry["rc"] == 0 else {})
            continue
        failed = _failed_tests(path.with_suffix(".xml"))
        runs.append({b["name"]: b for b in data.get("benchmarks", []) if b["name"] not in failed})
    return runs, lost


def collect(folder: Path) -> tuple[dict[str, Any], list[Bench]]:
    index = json.loads((folder / "index.json").read_text())
    out = []
    for bench in benches():
        runs, lost = _load_runs(folder, bench.key, index)
        if not runs and not lost:
            continue
        for fig in bench.figures:
            fig.failed = lost
            for run in runs:
                value = fig.get(run)
                if value is None:
                    fig.failed += 1
                else:
                    fig.values.append(value)
        out.append(bench)
    return index, out


def _summary(fig: Figure) -> tuple[str, str, str]:
    if not fig.values:
        return "—", "—", f"0 ({fig.failed} failed)"
    med = fig.fmt.format(statistics.median(fig.values))
    rng = f"{fig.fmt.format(min(fig.values))} – {fig.fmt.format(max(fig.values))}"
    runs = str(len(fig.values)) + (f" ({fig.failed} failed)" if fig.failed else "")
    return med, rng, runs


def markdown(folder: Path) -> str:
    index, found = collect(folder)
    m = index["machine"]
    loads = [r[k] for r in index["runs"] for k in ("loadavg_before", "loadavg_after")]
    lines = [
        f"Measured {m['date']} on {m['cpus']} vCPU ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}, "
        f"commit {m['commit']}; load average {min(loads):.2f}–{max(loads):.2f} during the runs"
        + (f", {index['total_seconds'] // 60} min {index['total_seconds'] % 60} s in all" if "total_seconds" in index
           else "") + ".",
        "",
    ]
    for bench in found:
        lines += [f"### {bench.title}", "", bench.about, "",
                  f"One run: `{_one_run(bench)}`", "",
                  "| Figure | Compared (API) | Median | Range (min – max) | Unit | Runs |",
                  "|---|---|---:|---:|---|---:|"]
        for fig in bench.figures:
            med, rng, runs = _summary(fig)
            lines.append(f"| {fig.name} | {fig.compared} | {med} | {rng} | {fig.unit} | {runs} |")
        lines.append("")
    return "\n".join(lines)


def _one_run(bench: Bench) -> str:
    if bench.key == "rust":
        return "cargo run --release --example rtp_receive_throughput"
    return f".venv/bin/python -m pytest {bench.command} --benchmark-only"


def compare(first: Path, second: Path) -> int:
    _, a = collect(first)
    _, b = collect(second)
    b_figs = {(bench.key, f.name): f for bench in b for f in bench.figures}
    bad = 0
    print(f"Does {second.name} reproduce {first.name}? (its median within the first range)\n")
    print("| Benchmark | Figure | First: median (range) | Second: median (range) | Reproduces |")
    print("|---|---|---|---|---|")
    for bench in a:
        for fig in bench.figures:
            other = b_figs.get((bench.key, fig.name))
            if not fig.values or other is None or not other.values:
                print(f"| {bench.key} | {fig.name} | — | — | no value |")
                bad += 1
                continue
            med = statistics.median(other.values)
            ok = min(fig.values) <= med <= max(fig.values)
            bad += not ok
            m1, r1, _ = _summary(fig)
            m2, r2, _ = _summary(other)
            print(f"| {bench.key} | {fig.name} | {m1} ({r1}) | {m2} ({r2}) | {'yes' if ok else 'NO'} |")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=str(HERE / "results" / "latest"))
    parser.add_argument("--write", action="store_true", help=f"replace the tables in {BENCHMARKS_MD.name}")
    parser.add_argument("--compare", metavar="SECOND", help="a second results folder to check against the first")
    args = parser.parse_args()
    folder = Path(args.results).resolve()
    if args.compare:
        return compare(folder, Path(args.compare).resolve())
    text = markdown(folder)
    print(text)
    if args.write:
        doc = BENCHMARKS_MD.read_text()
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        BENCHMARKS_MD.write_text(f"{head}{START}\n{text}\n{END}{tail}")
        print(f"\n(written to {BENCHMARKS_MD})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
