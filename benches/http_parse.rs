//! Parse + respond, per request, without sockets: what the HTTP layer itself costs on top of
//! the syscalls. A typical browser-like GET, the minimal GET the load generator sends, and a
//! pipelined batch of 16 browser-like GETs parsed from one buffer.
//!
//! `cargo bench --bench http_parse`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::request::{self, header_storage};
use http::response::{write_head, BodyLength, HeadContext};
use http::{Body, Limits, Response};

const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Cache-Control: max-age=0\r\n\r\n";

/// What `tidings-load` (and so `benches/compare.sh`) sends.
const MINIMAL: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:18302\r\n\r\n";

/// Parses the request at the start of `buf` and appends its answer to `out`; returns the
/// request's length.
fn parse_and_respond(buf: &[u8], out: &mut Vec<u8>, limits: &Limits, date: &[u8; 29]) -> usize {
    let mut headers = header_storage();
    let (req, framing) = request::parse(buf, &mut headers, limits).unwrap().unwrap();
    let resp = match req.path {
        "/plaintext" => Response::text(200, "Hello, World!"),
        _ => Response::text(404, "not found"),
    };
    write_head(out, &resp, &HeadContext { date, connection: None, length: BodyLength::Known });
    if let Body::Static(b) = resp.body {
        out.extend_from_slice(b);
    }
    framing.head_len
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let date = *b"Mon, 23 Nov 2026 00:00:00 GMT";
    let mut g = c.benchmark_group("parse_respond");

    g.throughput(Throughput::Elements(1));
    let one = GET.to_vec();
    let mut out = Vec::with_capacity(4096);
    g.bench_function("get", |b| {
        b.iter(|| {
            out.clear();
            black_box(parse_and_respond(&one, &mut out, &limits, &date));
        })
    });

    let minimal = MINIMAL.to_vec();
    g.bench_function("get_minimal", |b| {
        b.iter(|| {
            out.clear();
            black_box(parse_and_respond(&minimal, &mut out, &limits, &date));
        })
    });

    g.throughput(Throughput::Elements(16));
    let batch: Vec<u8> = GET.repeat(16);
    g.bench_function("pipelined_16", |b| {
        b.iter(|| {
            out.clear();
            let mut at = 0;
            while at < batch.len() {
                at += parse_and_respond(&batch[at..], &mut out, &limits, &date);
            }
            black_box(out.len());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
