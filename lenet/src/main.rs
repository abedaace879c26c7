//! `lenet`: see the crate documentation (`cargo doc -p lenet`) or `lenet --help`.

use clap::Parser;

fn main() {
    let cli = lenet::cli::Cli::parse();
    if let Err(e) = lenet::cli::run(cli) {
        lenet::note!("error: {e}");
        std::process::exit(1);
    }
}
