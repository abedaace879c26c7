//! Event profiling: kernel time apart from transfer time.
//!
//! Launches never wait: their events are kept and the profiling times read
//! lazily, at `profile()` or when the log grows long, so the queue is not
//! serialised after every kernel.

use std::collections::HashMap;

use kernels_core::{Error, Result};
use ocl::core::{ProfilingInfo, ProfilingInfoResult};
use ocl::{Event, Queue};

/// Kernel and transfer time from OpenCL event profiling, since the last
/// `reset_profile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Profile {
    /// Sum of kernel (and device fill) execution times, end − start.
    pub kernel_ns: u64,
    /// Sum of host<->device transfer times (upload, download, loss read).
    pub transfer_ns: u64,
    /// Kernels (and fills) enqueued.
    pub launches: u64,
    /// Transfers enqueued.
    pub transfers: u64,
}

/// Events waiting to be read before they are summed into the profile.
const EVENT_LOG_LIMIT: usize = 4096;

#[derive(Default)]
pub(crate) struct EventLog {
    /// (kernel name, or None for a transfer; the event)
    pending: Vec<(Option<&'static str>, Event)>,
    done: Profile,
    /// Kernel name -> (total ns, launches), for the per-kernel breakdown.
    by_kernel: HashMap<&'static str, (u64, u64)>,
}

fn dev(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

impl EventLog {
    /// Counts a launch (`kernel` named) or a transfer (None) and keeps its
    /// event; past EVENT_LOG_LIMIT pending events, reads them all.
    pub fn record(&mut self, kernel: Option<&'static str>, event: Event, queue: &Queue) -> Result<()> {
        if kernel.is_some() {
            self.done.launches += 1;
        } else {
            self.done.transfers += 1;
        }
        self.pending.push((kernel, event));
        if self.pending.len() >= EVENT_LOG_LIMIT {
            self.drain(queue)?;
        }
        Ok(())
    }

    /// Waits for the queue, then sums the pending events' times.
    pub fn drain(&mut self, queue: &Queue) -> Result<()> {
        queue.finish().map_err(|e| dev("waiting for the queue", e))?;
        for (kernel, event) in std::mem::take(&mut self.pending) {
            let read = |kind| match event.profiling_info(kind) {
                Ok(ProfilingInfoResult::Start(t)) | Ok(ProfilingInfoResult::End(t)) => Ok(t),
                Ok(_) => Ok(0),
                Err(e) => Err(dev("reading event profiling", e)),
            };
            let ns = read(ProfilingInfo::End)?.saturating_sub(read(ProfilingInfo::Start)?);
            if let Some(name) = kernel {
                self.done.kernel_ns += ns;
                let entry = self.by_kernel.entry(name).or_default();
                entry.0 += ns;
                entry.1 += 1;
            } else {
                self.done.transfer_ns += ns;
            }
        }
        Ok(())
    }

    pub fn totals(&self) -> Profile {
        self.done
    }

    pub fn reset(&mut self) {
        self.done = Profile::default();
        self.by_kernel.clear();
    }

    /// (kernel, total ns, launches), longest first.
    pub fn by_kernel(&self) -> Vec<(&'static str, u64, u64)> {
        let mut v: Vec<_> = self.by_kernel.iter().map(|(k, (ns, n))| (*k, *ns, *n)).collect();
        v.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        v
    }
}
