//! The `tidings` binary: parse flags, run the hub, exit 0 after a graceful stop.

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match app::parse_args(std::env::args().skip(1)) {
        Ok(app::Command::Run(opts)) => opts,
        Ok(app::Command::Help) => {
            print!("{}", app::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tidings: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = opts.workers;
    let result = app::run(opts, |addr| {
        eprintln!("tidings: listening on http://{addr} (1 reactor thread, {workers} workers)");
    });
    match result {
        Ok(()) => {
            eprintln!("tidings: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidings: {e}");
            ExitCode::FAILURE
        }
    }
}
