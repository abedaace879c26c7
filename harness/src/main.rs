//! The `harness` binary: see the library's manual (`harness/src/lib.rs`)
//! or `cargo run --release -p harness -- --help`.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::Args;
use harness::run::{run, write_report};

fn main() -> ExitCode {
    let args = Args::parse();
    let command = std::iter::once("harness".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let report = match run(&args, command) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    match write_report(&report, &args.out) {
        Ok(files) => {
            eprintln!(
                "harness: {} records validated and timed; wrote {} files to {}",
                report.records.len(),
                files.len(),
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::FAILURE
        }
    }
}
