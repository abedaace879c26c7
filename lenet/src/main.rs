//! `lenet`: see the crate documentation (`cargo doc -p lenet`) or `lenet --help`.

use clap::Parser;

fn main() {
    // Before any tensor is allocated: see lenet::allocator.
    lenet::allocator::keep_freed_memory();
    let cli = lenet::cli::Cli::parse();
    if let Err(e) = lenet::cli::run(cli) {
        lenet::note!("error: {e}");
        std::process::exit(1);
    }
}
