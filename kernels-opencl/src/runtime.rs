//! The OpenCL runtime one backend instance owns: context, profiling queue,
//! the programs built once from `cl/*.cl`, a cache of kernel objects, device
//! buffers counted while alive, and the event log (profile.rs) behind
//! [`Profile`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kernels_core::{Error, Result};
use ocl::core::{ArgVal, Kernel as KernelCore};
use ocl::flags::CommandQueueProperties;
use ocl::{Buffer, Context, Event, Program, Queue};

use crate::device::{Chosen, Limits};
use crate::profile::{EventLog, Profile};
use crate::tiles::Tiles;

/// Counts the bytes of device buffers this backend allocated and has not yet
/// dropped.
#[derive(Debug, Default)]
pub(crate) struct LiveBytes(AtomicUsize);

/// Held by every buffer wrapper: gives its bytes back to the count on drop.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    bytes: usize,
    counter: Arc<LiveBytes>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.counter.0.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A device buffer and its place in the live-bytes count.
#[derive(Debug)]
pub(crate) struct DeviceBuffer<T: ocl::OclPrm> {
    pub buffer: Buffer<T>,
    _guard: LiveGuard,
}

/// One kernel argument.
pub(crate) enum Arg<'a> {
    F32Buf(&'a Buffer<f32>),
    I32Buf(&'a Buffer<i32>),
    I32(i32),
    F32(f32),
    /// A `__local float` array of this many elements.
    LocalF32(usize),
}

pub(crate) struct Runtime {
    pub queue: Queue,
    pub chosen: Chosen,
    pub tiles: Tiles,
    programs: Vec<(&'static str, Program)>,
    kernels: Mutex<HashMap<&'static str, KernelCore>>,
    events: Mutex<EventLog>,
    live: Arc<LiveBytes>,
    /// One scratch buffer (im2col columns), grown on demand and reused: the
    /// queue is in order, so the next call's use follows this one's.
    scratch: Mutex<Option<DeviceBuffer<f32>>>,
    /// Kept alive for as long as the queue, programs and buffers (declared
    /// last, so dropped last): later allocations ask the queue for its
    /// context, and a strict runtime (Intel's CPU runtime) answers
    /// CL_INVALID_CONTEXT once the context was released, where PoCL
    /// tolerates it.
    _context: Context,
}

fn dev(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The kernel sources, one file per op family, and which kernels each holds.
const SOURCES: [(&str, &str); 9] = [
    ("gemm.cl", include_str!("cl/gemm.cl")),
    ("conv.cl", include_str!("cl/conv.cl")),
    ("direct.cl", include_str!("cl/direct.cl")),
    // conv_direct again with KB_ALT filters per work-item (see direct.cl).
    ("direct.cl (alt)", concat!("#define DIRECT_ALT\n", include_str!("cl/direct.cl"))),
    ("pool.cl", include_str!("cl/pool.cl")),
    ("activation.cl", include_str!("cl/activation.cl")),
    ("loss.cl", include_str!("cl/loss.cl")),
    ("reduce.cl", include_str!("cl/reduce.cl")),
    ("optim.cl", include_str!("cl/optim.cl")),
];

/// Builds one program; a failure is `Error::Device` with the compiler's
/// build log (ocl's build error carries it).
fn build_program(context: &Context, chosen: &Chosen, file: &str, src: &str, options: &str) -> Result<Program> {
    Program::builder()
        .src(src)
        .devices(chosen.device)
        .cmplr_opt(options)
        .build(context)
        .map_err(|e| Error::Device(format!("building {file} with `{options}` failed:\n{e}")))
}

impl Runtime {
    pub fn new(chosen: Chosen, config: &crate::Config) -> Result<Self> {
        let context = Context::builder()
            .platform(chosen.platform)
            .devices(chosen.device)
            .build()
            .map_err(|e| dev("creating context", e))?;
        let queue = Queue::new(&context, chosen.device, Some(CommandQueueProperties::PROFILING_ENABLE))
            .map_err(|e| dev("creating queue", e))?;
        let tiles = Tiles::for_device(&chosen.limits, config);
        let options = tiles.build_options();
        let mut programs = Vec::with_capacity(SOURCES.len());
        for (file, src) in SOURCES {
            programs.push((file, build_program(&context, &chosen, file, src, &options)?));
        }
        Ok(Self {
            queue,
            chosen,
            tiles,
            programs,
            kernels: Mutex::new(HashMap::new()),
            events: Mutex::new(EventLog::default()),
            live: Arc::new(LiveBytes::default()),
            scratch: Mutex::new(None),
            _context: context,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.chosen.limits
    }

    pub fn live_bytes(&self) -> usize {
        self.live.0.load(Ordering::Relaxed)
    }

    fn guard(&self, bytes: usize) -> LiveGuard {
        self.live.0.fetch_add(bytes, Ordering::Relaxed);
        LiveGuard { bytes, counter: Arc::clone(&self.live) }
    }

    /// An uninitialised device buffer of `len` elements (len > 0).
    pub fn alloc<T: ocl::OclPrm>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = len.max(1).saturating_mul(std::mem::size_of::<T>());
        if bytes as u64 > self.limits().max_alloc_bytes {
            return Err(Error::Device(format!(
                "a buffer of {bytes} bytes exceeds the device's largest allocation ({} bytes)",
                self.limits().max_alloc_bytes
            )));
        }
        let buffer = Buffer::<T>::builder()
            .queue(self.queue.clone())
            .len(len.max(1))
            .build()
            .map_err(|e| dev("allocating a device buffer", e))?;
        Ok(DeviceBuffer { buffer, _guard: self.guard(bytes) })
    }

    /// The scratch buffer with room for at least `len` floats.
    pub fn scratch(&self, op: &'static str, len: usize) -> Result<Buffer<f32>> {
        let limit = self.scratch_limit();
        let bytes = len.saturating_mul(4);
        if bytes > limit {
            return Err(Error::Scratch { op, bytes, limit });
        }
        let mut slot = lock(&self.scratch);
        if let Some(buf) = slot.as_ref()
            && buf.buffer.len() >= len
        {
            return Ok(buf.buffer.clone());
        }
        // Drop the old one first so the two never coexist.
        *slot = None;
        let fresh = self.alloc::<f32>(len)?;
        let handle = fresh.buffer.clone();
        *slot = Some(fresh);
        Ok(handle)
    }

    /// Largest scratch allocation: 512 MiB or the device's largest buffer.
    pub fn scratch_limit(&self) -> usize {
        (self.limits().max_alloc_bytes.min(512 << 20)) as usize
    }

    /// A device buffer holding `data`.
    pub fn upload<T: ocl::OclPrm>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let buf = self.alloc::<T>(data.len())?;
        if !data.is_empty() {
            let mut event = Event::empty();
            buf.buffer.write(data).enew(&mut event).enq().map_err(|e| dev("uploading", e))?;
            self.record(None, event)?;
        }
        Ok(buf)
    }

    /// Reads `buffer` into a host vector of `len` elements (blocking).
    pub fn download<T: ocl::OclPrm>(&self, buffer: &Buffer<T>, len: usize) -> Result<Vec<T>> {
        let mut host = vec![T::default(); len];
        if len > 0 {
            let mut event = Event::empty();
            buffer.read(&mut host).len(len).enew(&mut event).enq().map_err(|e| dev("downloading", e))?;
            self.record(None, event)?;
        }
        Ok(host)
    }

    /// Sets every element of `buffer` to `value` on the device.
    pub fn fill(&self, buffer: &Buffer<f32>, value: f32) -> Result<()> {
        let mut event = Event::empty();
        buffer.cmd().fill(value, None).enew(&mut event).enq().map_err(|e| dev("filling a buffer", e))?;
        self.record(Some("fill"), event)
    }

    /// Enqueues kernel `name` over `global` work-items (`local` per group,
    /// or the driver's choice). `global` must be a multiple of `local`.
    pub fn launch(&self, name: &'static str, args: &[Arg], global: &[usize], local: Option<&[usize]>) -> Result<()> {
        let dims = global.len();
        if dims == 0 || dims > 3 || local.is_some_and(|l| l.len() != dims) {
            return Err(Error::Device(format!("{name}: bad launch dimensions {global:?} / {local:?}")));
        }
        let mut gws = [1usize; 3];
        gws[..dims].copy_from_slice(global);
        if gws.contains(&0) {
            // Nothing to compute; OpenCL refuses empty ranges.
            return Ok(());
        }
        let lws = local.map(|l| {
            let mut out = [1usize; 3];
            out[..dims].copy_from_slice(l);
            out
        });
        if let Some(l) = lws
            && gws.iter().zip(&l).any(|(g, l)| *l == 0 || g % l != 0)
        {
            return Err(Error::Device(format!("{name}: global size {global:?} is not a multiple of {l:?}")));
        }
        let mut kernels = lock(&self.kernels);
        if !kernels.contains_key(name) {
            let mut last_err = None;
            let mut made = None;
            // Kernel names are unique across the files: take the program
            // that has it.
            for (_, program) in &self.programs {
                match ocl::core::create_kernel(program.as_core(), name) {
                    Ok(k) => {
                        made = Some(k);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let kernel = made.ok_or_else(|| {
                dev(&format!("creating kernel {name}"), last_err.map(|e| e.to_string()).unwrap_or_default())
            })?;
            kernels.insert(name, kernel);
        }
        let kernel = kernels.get(name).ok_or_else(|| Error::Device(format!("kernel {name} missing")))?;
        for (i, arg) in args.iter().enumerate() {
            let idx = i as u32;
            let set = match arg {
                Arg::F32Buf(b) => ocl::core::set_kernel_arg(kernel, idx, ArgVal::mem(b.as_core())),
                Arg::I32Buf(b) => ocl::core::set_kernel_arg(kernel, idx, ArgVal::mem(b.as_core())),
                Arg::I32(v) => ocl::core::set_kernel_arg(kernel, idx, ArgVal::scalar(v)),
                Arg::F32(v) => ocl::core::set_kernel_arg(kernel, idx, ArgVal::scalar(v)),
                Arg::LocalF32(n) => ocl::core::set_kernel_arg(kernel, idx, ArgVal::local::<f32>(n)),
            };
            set.map_err(|e| dev(&format!("{name}: setting argument {i}"), e))?;
        }
        let mut event = Event::empty();
        // SAFETY: every argument of the kernel was set just above, under the
        // lock, from live buffers whose sizes the launcher derived from a
        // validated geometry; the kernels bound-check their indices against
        // the sizes passed with them, and the range is non-empty.
        unsafe {
            ocl::core::enqueue_kernel(
                self.queue.as_core(),
                kernel,
                dims as u32,
                None,
                &gws,
                lws,
                None::<&ocl::core::Event>,
                Some(&mut event),
            )
        }
        .map_err(|e| dev(&format!("enqueueing {name} over {global:?}"), e))?;
        drop(kernels);
        self.record(Some(name), event)
    }

    /// Launches over `global` (1 to 3 dims) with work-groups of up to
    /// `line_wg` work-items spread over dimensions 0 and 1 (both rounded up:
    /// these kernels guard their first two ids; dimension 2 stays exact).
    /// Large groups matter on a CPU device, where each group has a fixed
    /// scheduling cost.
    pub fn launch_lines(&self, name: &'static str, args: &[Arg], global: &[usize]) -> Result<()> {
        let wg = self.tiles.line_wg.max(1);
        let mut local = vec![1; global.len()];
        local[0] = wg.min(global[0].next_power_of_two()).max(1);
        if global.len() > 1 {
            local[1] = (wg / local[0]).min(global[1].next_power_of_two()).max(1);
        }
        let rounded: Vec<usize> = global.iter().zip(&local).map(|(g, l)| crate::tiles::round_up(*g, *l)).collect();
        self.launch(name, args, &rounded, Some(&local))
    }

    fn record(&self, kernel: Option<&'static str>, event: Event) -> Result<()> {
        lock(&self.events).record(kernel, event, &self.queue)
    }

    pub fn sync(&self) -> Result<()> {
        self.queue.finish().map_err(|e| dev("waiting for the queue", e))
    }

    pub fn profile(&self) -> Result<Profile> {
        let mut log = lock(&self.events);
        log.drain(&self.queue)?;
        Ok(log.totals())
    }

    pub fn reset_profile(&self) -> Result<()> {
        let mut log = lock(&self.events);
        log.drain(&self.queue)?;
        log.reset();
        Ok(())
    }

    /// (kernel, total ns, launches) since the last reset, longest first.
    pub fn profile_by_kernel(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        let mut log = lock(&self.events);
        log.drain(&self.queue)?;
        Ok(log.by_kernel())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_failure_carries_the_build_log() {
        let chosen = crate::device::default_device().expect("an OpenCL device");
        let context = Context::builder().platform(chosen.platform).devices(chosen.device).build().unwrap();
        let broken = "__kernel void broken(__global float* x) { x[0] = undefined_name; }";
        let err = build_program(&context, &chosen, "broken.cl", broken, "-D X=1").unwrap_err().to_string();
        assert!(err.contains("broken.cl") && err.contains("undefined_name"), "{err}");
        let fine = "__kernel void fine(__global float* x) { x[0] = X; }";
        build_program(&context, &chosen, "fine.cl", fine, "-D X=1").unwrap();
    }
}
