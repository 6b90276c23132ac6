//! The smallest useful server: `GET /plaintext` answers `Hello, World!`, anything else 404.
//! Used by the end-to-end benchmarks until the hub exists, and as a template.
//!
//! `cargo run --release -p tidings-http --example plaintext -- 127.0.0.1:8080`

use http::{Config, Ctx, Request, Responder, Response, Server, Service};
use reactor::Reactor;

struct Plaintext;

impl Service for Plaintext {
    type Msg = ();
    type Note = ();
    type Timer = ();

    fn call(&mut self, ctx: &mut Ctx<'_, Plaintext>, req: &Request<'_>, responder: Responder) {
        let resp = match req.path {
            "/plaintext" => Response::text(200, "Hello, World!"),
            _ => Response::text(404, "not found"),
        };
        // Answering inside `call` puts the response in this connection's output batch; the
        // server writes the whole batch with one syscall once the read buffer is processed.
        let _ = ctx.respond(responder, resp);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plaintext: bad address {addr:?}: {e}");
            std::process::exit(2);
        }
    };
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&[libc::SIGINT, libc::SIGTERM])?;
    let mut server = Server::bind(Config { addr, ..Config::default() }, Plaintext, &mut reactor)?;
    eprintln!("plaintext: listening on http://{}", server.local_addr());
    server.run(&mut reactor)
}
