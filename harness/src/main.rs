//! The `harness` binary: see the library's manual (`harness/src/lib.rs`)
//! or `cargo run --release -p harness -- --help`.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::Args;
use harness::run::{check_out_dir, keep_results, read_report, run, write_report};

fn main() -> ExitCode {
    // Like lenet: freed activations stay mapped (lenet::allocator says why).
    lenet::allocator::keep_freed_memory();
    let args = Args::parse();
    let command = std::iter::once("harness".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    // The output directory is checked before anything is measured.
    let measured = check_out_dir(&args.out).and_then(|()| match &args.replot {
        Some(path) => read_report(path),
        None => run(&args, command),
    });
    let report = match measured {
        Ok(report) => report,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    match write_report(&report, &args.out) {
        Ok(files) => {
            let done = if args.replot.is_some() { "re-rendered" } else { "validated and timed" };
            eprintln!(
                "harness: {} records {done}; wrote {} files to {}",
                report.records.len(),
                files.len(),
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: {e}");
            // A measured run's results are kept whatever happened to --out.
            if args.replot.is_none() {
                match keep_results(&report, &std::env::temp_dir()) {
                    Ok(kept) => eprintln!(
                        "harness: the measured results were kept in {}; render them with \
                         `harness --replot {} --out DIR`",
                        kept.display(),
                        kept.display()
                    ),
                    Err(e) => eprintln!("harness: keeping the results elsewhere failed too: {e}"),
                }
            }
            ExitCode::FAILURE
        }
    }
}
