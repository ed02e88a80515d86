//! Pure-Rust SIP parse throughput over the realistic seed corpus
//! (`fuzz/corpus/sip_message/*.sip`: INVITE with SDP, 1xx/2xx, 401/407 with
//! challenges, ACK, BYE, REGISTER, OPTIONS, compact forms, multiple Via...).
//!
//! Run: `cargo run --release --example sip_parse_throughput [seconds]`
//!
//! Prints messages per second on one core for `SipMessage::parse` alone, and
//! for parse plus reading what a UA needs from each message (Call-ID, CSeq,
//! top Via with its branch, From tag, To). A plain timing loop rather than
//! criterion: one number per line is all CI and the report need, and it keeps
//! the dev-dependencies empty.

use sipstream_core::{SipMessage, Via};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn load_corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sip_message");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Run `f` over the whole corpus repeatedly for about `budget`; msg/s.
fn measure(corpus: &[Vec<u8>], budget: Duration, f: impl Fn(&[u8]) -> usize) -> f64 {
    // warm-up
    for m in corpus {
        black_box(f(black_box(m)));
    }
    let start = Instant::now();
    let mut messages = 0u64;
    while start.elapsed() < budget {
        for _ in 0..100 {
            for m in corpus {
                black_box(f(black_box(m)));
            }
        }
        messages += 100 * corpus.len() as u64;
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

fn parse_only(data: &[u8]) -> usize {
    let m = SipMessage::parse(data).expect("corpus message parses");
    m.headers.len() + m.body.len()
}

fn parse_and_read(data: &[u8]) -> usize {
    let m = SipMessage::parse(data).expect("corpus message parses");
    let call_id = m.call_id().map_or(0, str::len);
    let cseq = m.cseq().map_or(0, |(n, _)| n as usize);
    let branch = m
        .header("Via")
        .and_then(|v| Via::parse(v).ok())
        .map_or(0, |v| v.branch().map_or(0, str::len));
    let from_tag = m.from_tag().ok().flatten().map_or(0, str::len);
    let to = m.header("To").map_or(0, str::len);
    call_id + cseq + branch + from_tag + to
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(seconds);
    let corpus = load_corpus();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let avg = bytes as f64 / corpus.len() as f64;
    println!(
        "corpus: {} messages, {bytes} bytes (avg {avg:.0} B/message)",
        corpus.len()
    );
    let rate = measure(&corpus, budget, parse_only);
    println!(
        "parse:                    {:>10.0} msg/s  ({:.0} MB/s, {:.0} ns/msg)",
        rate,
        rate * avg / 1e6,
        1e9 / rate
    );
    let rate = measure(&corpus, budget, parse_and_read);
    println!(
        "parse + Call-ID/CSeq/Via/From tag/To: {:>10.0} msg/s  ({:.0} ns/msg)",
        rate,
        1e9 / rate
    );
}
