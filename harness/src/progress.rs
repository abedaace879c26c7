//! Progress of a run: an indicatif bar when stderr is a terminal, plain
//! lines otherwise (CI logs, `make report > log`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, done: u64 },
}

impl Progress {
    /// A progress display over `total` measurements.
    pub fn new(total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Lines { total, done: 0 }
        }
    }

    /// Announces the measurement about to start.
    pub fn start(&mut self, what: &str) {
        match self {
            Progress::Bar(bar) => bar.set_message(what.to_string()),
            Progress::Lines { total, done } => eprintln!("[{}/{total}] {what}", *done + 1),
        }
    }

    /// Reports a finished measurement with a one-line summary.
    pub fn finish_one(&mut self, summary: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.println(summary);
                bar.inc(1);
            }
            Progress::Lines { done, .. } => {
                *done += 1;
                eprintln!("        {summary}");
            }
        }
    }

    /// A line that is not a measurement (ceilings, oracle runs).
    pub fn note(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Lines { .. } => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
