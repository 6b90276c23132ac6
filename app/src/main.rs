//! The `tidings` binary: parse flags, run the hub, exit 0 after a graceful stop (or print a
//! subscribe token: `tidings token CHANNEL ..`).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `std::env::args()` would panic on an argument that is not UTF-8: make it a usage error.
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let parsed = match args {
        Ok(args) => app::parse_args(args),
        Err(bad) => Err(format!("argument {bad:?} is not valid UTF-8")),
    };
    // Output never panics (print!/eprintln! do on a closed pipe): `tidings --help | head -1`.
    let opts = match parsed {
        Ok(app::Command::Run(opts)) => opts,
        Ok(app::Command::Help) => {
            let _ = std::io::stdout().write_all(app::USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Ok(app::Command::Token { channel, ttl, key }) => {
            let token = key.sign(&channel, app::auth::unix_now().saturating_add(ttl));
            return match std::io::stdout().write_all(format!("{token}\n").as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    app::log(format_args!("cannot print the token: {e}"));
                    ExitCode::FAILURE
                }
            };
        }
        Err(e) => {
            app::log(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    let workers = match opts.workers {
        0 => "no workers: /work is off".to_string(),
        n => format!("{n} workers"),
    };
    let result = app::run(opts, |addr| {
        app::log(format_args!("listening on http://{addr} (1 reactor thread, {workers})"));
    });
    match result {
        Ok(()) => {
            app::log(format_args!("stopped"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            app::log(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}
