//! The OpenCL runtime one backend instance owns: context, profiling queue,
//! the programs built once from `cl/*.cl`, a cache of kernel objects, device
//! buffers counted while alive, and the event log (profile.rs) behind
//! [`Profile`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kernels_core::{Error, Result};
use ocl::core::{
    ArgVal, Kernel as KernelCore, KernelWorkGroupInfo, KernelWorkGroupInfoResult, ProgramInfo, ProgramInfoResult,
};
use ocl::enums::ProgramBuildInfo;
use ocl::flags::CommandQueueProperties;
use ocl::{Buffer, Context, Event, Program, Queue};

use crate::cache::{self, CacheStats};
use crate::device::{Chosen, Limits};
use crate::kernel_names::Kernel;
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

/// The locked scratch buffer (see [`Runtime::scratch`]); derefs to the
/// buffer.
pub(crate) struct ScratchGuard<'a> {
    slot: MutexGuard<'a, Option<DeviceBuffer<f32>>>,
}

impl std::ops::Deref for ScratchGuard<'_> {
    type Target = Buffer<f32>;

    fn deref(&self) -> &Buffer<f32> {
        match self.slot.as_ref() {
            Some(buf) => &buf.buffer,
            // `Runtime::scratch` fills the slot before making a guard and
            // nothing empties it while the guard holds the lock.
            None => unreachable!("a scratch guard always holds a buffer"),
        }
    }
}

/// A kernel object and the limits its launches are checked against.
struct KernelEntry {
    kernel: KernelCore,
    /// CL_KERNEL_WORK_GROUP_SIZE, capped by the device's maximum: heavy
    /// kernels on a GPU may allow fewer work-items than the device.
    max_group: usize,
    /// CL_KERNEL_LOCAL_MEM_SIZE before any `__local` argument is set: the
    /// kernel's own `__local` arrays.
    static_local_bytes: u64,
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
    /// What the program binary cache did while this runtime was built.
    pub cache_stats: CacheStats,
    /// Every kernel of every program, by name, created once in `new`: a
    /// launch looks its kernel up instead of trying each program in turn
    /// (whose CL_INVALID_KERNEL_NAME failures buried real errors under an
    /// API checker). The lock covers setting arguments and enqueueing.
    kernels: Mutex<HashMap<String, KernelEntry>>,
    /// Kept alive for the kernels made from them.
    _programs: Vec<Program>,
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
/// How many programs a backend builds (and caches): one per entry of the
/// source table.
pub const PROGRAM_COUNT: usize = SOURCES.len();

const SOURCES: [(&str, &str); 10] = [
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
    ("norm.cl", include_str!("cl/norm.cl")),
];

/// Environment variable: "1" prints each program's build log to stderr
/// after a successful build (a failed build's log is always in its error).
pub const BUILD_LOG_ENV: &str = "KERNELS_OPENCL_BUILD_LOG";

fn build_log_requested() -> bool {
    std::env::var(BUILD_LOG_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Environment variable: options appended to every program build, e.g.
/// `-cl-opt-disable` for Oclgrind's uninitialised-value checks (its 21.10
/// plugin aborts on LLVM's `freeze` in optimised code). Part of the
/// program cache key like every option.
pub const EXTRA_BUILD_OPTIONS_ENV: &str = "KERNELS_OPENCL_BUILD_OPTIONS";

/// The options a program is built with: `options`, the extra options from
/// KERNELS_OPENCL_BUILD_OPTIONS, and `-w` unless the build log was asked
/// for. Compilers print their diagnostics' summary ("22 warnings
/// generated.") straight to the process's stderr (PoCL's clang does),
/// which no caller can catch; `-w`, an OpenCL standard option, silences
/// warnings at the source. Errors are unaffected.
fn effective_options(options: &str) -> String {
    let mut all = options.to_owned();
    if let Ok(extra) = std::env::var(EXTRA_BUILD_OPTIONS_ENV)
        && !extra.trim().is_empty()
    {
        all = format!("{all} {}", extra.trim());
    }
    if build_log_requested() { all } else { format!("{all} -w") }
}

/// Builds one program; a failure is `Error::Device` with the compiler's
/// build log (ocl's build error carries it). With KERNELS_OPENCL_BUILD_LOG=1
/// a successful build's log goes to stderr.
fn build_program(context: &Context, chosen: &Chosen, file: &str, src: &str, options: &str) -> Result<Program> {
    let options = effective_options(options);
    let program = Program::builder()
        .src(src)
        .devices(chosen.device)
        .cmplr_opt(&options)
        .build(context)
        .map_err(|e| Error::Device(format!("building {file} with `{options}` failed:\n{e}")))?;
    if build_log_requested() {
        let log = program
            .build_info(chosen.device, ProgramBuildInfo::BuildLog)
            .map(|l| l.to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        eprintln!("kernels-opencl: build log of {file} (`{options}`):\n{}", log.trim());
    }
    Ok(program)
}

/// Where the program cache is for this backend: its directory and the
/// device's part of the keys (None: cache off).
type CacheAt<'a> = Option<(&'a std::path::Path, &'a str)>;

/// A program from the binary cache when it holds one the driver accepts,
/// else built from source and its binary written to the cache.
fn build_cached(
    context: &Context,
    chosen: &Chosen,
    (file, src): (&str, &str),
    options: &str,
    cache: CacheAt,
    stats: &mut CacheStats,
) -> Result<Program> {
    let Some((dir, device_key)) = cache else {
        stats.misses += 1;
        return build_program(context, chosen, file, src, options);
    };
    let entry = cache::Entry::new(dir, device_key, file, src, &effective_options(options));
    match entry.load() {
        Ok(Some(binary)) => {
            let binaries = [binary.as_slice()];
            let built = Program::builder()
                .binaries(&binaries)
                .devices(chosen.device)
                .cmplr_opt(effective_options(options))
                .build(context);
            match built {
                Ok(program) => {
                    stats.hits += 1;
                    return Ok(program);
                }
                // A binary from another driver build or damaged in a way
                // the checksum cannot see: rebuild and overwrite it.
                Err(_) => stats.rejected += 1,
            }
        }
        Ok(None) => stats.misses += 1,
        Err(()) => stats.rejected += 1,
    }
    let program = build_program(context, chosen, file, src, options)?;
    let binary = match ocl::core::get_program_info(program.as_core(), ProgramInfo::Binaries) {
        Ok(ProgramInfoResult::Binaries(mut bins)) if bins.len() == 1 && !bins[0].is_empty() => bins.pop(),
        _ => None,
    };
    match binary.map(|b| entry.store(&b)) {
        Some(Ok(())) => stats.written += 1,
        // The cache is an optimisation: a read-only or full disk costs the
        // next process a rebuild, nothing more.
        _ => stats.write_errors += 1,
    }
    Ok(program)
}

/// Which program defines each kernel name, from the programs' own lists
/// (`(file, "name;name;...")`, CL_PROGRAM_KERNEL_NAMES). A name defined
/// twice is an error: a launch could not tell which one it means.
fn index_kernel_names(listings: &[(&str, String)]) -> Result<HashMap<String, usize>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, (file, names)) in listings.iter().enumerate() {
        for name in names.split(';').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(&first) = index.get(name) {
                return Err(Error::Device(format!(
                    "kernel {name} is defined by both {} and {file}",
                    listings[first].0
                )));
            }
            index.insert(name.to_owned(), i);
        }
    }
    Ok(index)
}

/// Every kernel of `programs` by name, each created once from the one
/// program that defines it, with its work-group limits on `chosen`.
fn kernel_table(programs: &[(&'static str, Program)], chosen: &Chosen) -> Result<HashMap<String, KernelEntry>> {
    let mut listings = Vec::with_capacity(programs.len());
    for (file, program) in programs {
        let names = match ocl::core::get_program_info(program.as_core(), ProgramInfo::KernelNames) {
            Ok(ProgramInfoResult::KernelNames(names)) => names,
            Ok(other) => return Err(Error::Device(format!("{file}: kernel names read as {other:?}"))),
            Err(e) => return Err(dev(&format!("{file}: listing its kernels"), e)),
        };
        listings.push((*file, names));
    }
    let index = index_kernel_names(&listings)?;
    let mut table = HashMap::with_capacity(index.len());
    for (name, i) in index {
        let kernel = ocl::core::create_kernel(programs[i].1.as_core(), &name)
            .map_err(|e| dev(&format!("creating kernel {name} from {}", programs[i].0), e))?;
        let info = |what| ocl::core::get_kernel_work_group_info(&kernel, chosen.device, what);
        let max_group = match info(KernelWorkGroupInfo::WorkGroupSize) {
            Ok(KernelWorkGroupInfoResult::WorkGroupSize(n)) => n.max(1),
            // Unreadable: assume the device's limit; the driver still
            // refuses a launch that does not fit.
            _ => chosen.limits.max_work_group,
        };
        let static_local_bytes = match info(KernelWorkGroupInfo::LocalMemSize) {
            Ok(KernelWorkGroupInfoResult::LocalMemSize(n)) => n,
            _ => 0,
        };
        let max_group = max_group.min(chosen.limits.max_work_group);
        table.insert(name, KernelEntry { kernel, max_group, static_local_bytes });
    }
    Ok(table)
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
        let cache_dir = cache::cache_dir();
        let device_key = cache::device_key(&chosen);
        let cache_at = cache_dir.as_deref().map(|dir| (dir, device_key.as_str()));
        let mut cache_stats = CacheStats::default();
        let mut programs = Vec::with_capacity(SOURCES.len());
        for (file, src) in SOURCES {
            programs.push((file, build_cached(&context, &chosen, (file, src), &options, cache_at, &mut cache_stats)?));
        }
        let kernels = kernel_table(&programs, &chosen)?;
        Ok(Self {
            queue,
            chosen,
            cache_stats,
            tiles,
            kernels: Mutex::new(kernels),
            _programs: programs.into_iter().map(|(_, p)| p).collect(),
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

    /// The scratch buffer with room for at least `len` floats, locked for
    /// as long as the guard lives. Hold the guard until every launch that
    /// writes or reads it is enqueued: the queue is in order, so another
    /// thread's next use (which waits for the lock) runs after them; a
    /// handle used after the lock was released would let two convolutions
    /// interleave their writes to it.
    pub fn scratch(&self, op: &'static str, len: usize) -> Result<ScratchGuard<'_>> {
        let limit = self.scratch_limit();
        let bytes = len.saturating_mul(4);
        if bytes > limit {
            return Err(Error::Scratch { op, bytes, limit });
        }
        let mut slot = lock(&self.scratch);
        if slot.as_ref().is_none_or(|buf| buf.buffer.len() < len) {
            // Drop the old one first so the two never coexist (commands
            // already enqueued on it keep it alive on the device).
            *slot = None;
            *slot = Some(self.alloc::<f32>(len)?);
        }
        Ok(ScratchGuard { slot })
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

    /// Sets the first `len` elements of `buffer` to `value` on the device
    /// (`fill_f32`).
    pub fn fill(&self, buffer: &Buffer<f32>, len: usize, value: f32) -> Result<()> {
        let n = i32::try_from(len)
            .map_err(|_| Error::Device(format!("fill: {len} elements exceed the kernels' 32-bit index range")))?;
        self.launch_lines(crate::kernel_names::FILL_F32, &[Arg::F32Buf(buffer), Arg::I32(n), Arg::F32(value)], &[len])
    }

    /// Enqueues kernel `name` over `global` work-items (`local` per group,
    /// or the driver's choice). `global` must be a multiple of `local`.
    pub fn launch(&self, kernel: Kernel, args: &[Arg], global: &[usize], local: Option<&[usize]>) -> Result<()> {
        let name = kernel.name();
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
        let kernels = lock(&self.kernels);
        let entry =
            kernels.get(name).ok_or_else(|| Error::Device(format!("no program defines a kernel named {name}")))?;
        if let Some(l) = lws {
            let local_bytes = args.iter().map(|a| if let Arg::LocalF32(n) = a { 4 * *n as u64 } else { 0 }).sum();
            self.check_fit(name, entry, &l, local_bytes)?;
        }
        let kernel = &entry.kernel;
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

    /// Why a launch of `entry` with work-groups `local` and `local_bytes` of
    /// `__local` arguments would not fit the device, as an error (the
    /// driver's answer would be CL_INVALID_WORK_GROUP_SIZE or
    /// CL_OUT_OF_RESOURCES, or on some drivers a crash).
    fn check_fit(&self, name: &str, entry: &KernelEntry, local: &[usize; 3], local_bytes: u64) -> Result<()> {
        let limits = self.limits();
        let items: usize = local.iter().product();
        let total_local = entry.static_local_bytes + local_bytes;
        if items > entry.max_group
            || local.iter().zip(&limits.max_work_items).any(|(l, m)| l > m)
            || total_local > limits.local_mem_bytes
        {
            return Err(Error::Device(format!(
                "{name}: a work-group of {local:?} ({items} work-items, {total_local} bytes of local memory) \
                 exceeds this kernel's limits here ({} work-items, {:?} per dimension, {} bytes of local memory)",
                entry.max_group, limits.max_work_items, limits.local_mem_bytes
            )));
        }
        Ok(())
    }

    /// Whether `kernel` can launch with work-groups `local` and
    /// `local_bytes` of `__local` arguments on this device.
    pub fn fits(&self, kernel: Kernel, local: &[usize], local_bytes: u64) -> bool {
        let mut l = [1usize; 3];
        l[..local.len().min(3)].copy_from_slice(&local[..local.len().min(3)]);
        lock(&self.kernels)
            .get(kernel.name())
            .is_some_and(|e| self.check_fit(kernel.name(), e, &l, local_bytes).is_ok())
    }

    /// The largest work-group `kernel` may launch with here, and the
    /// per-dimension limits.
    pub fn max_group(&self, kernel: Kernel) -> (usize, [usize; 3]) {
        let max = lock(&self.kernels).get(kernel.name()).map_or(self.limits().max_work_group, |e| e.max_group);
        (max, self.limits().max_work_items)
    }

    /// Launches over `global` (1 to 3 dims) with work-groups of up to
    /// `line_wg` work-items spread over dimensions 0 and 1 (both rounded up:
    /// these kernels guard their first two ids; dimension 2 stays exact).
    /// Large groups matter on a CPU device, where each group has a fixed
    /// scheduling cost.
    pub fn launch_lines(&self, kernel: Kernel, args: &[Arg], global: &[usize]) -> Result<()> {
        let (max_group, max_items) = self.max_group(kernel);
        let wg = self.tiles.line_wg.min(max_group).max(1);
        let mut local = vec![1; global.len()];
        local[0] = wg.min(global[0].next_power_of_two()).min(max_items[0]).max(1);
        if global.len() > 1 {
            local[1] = (wg / local[0]).min(global[1].next_power_of_two()).min(max_items[1]).max(1);
        }
        let rounded: Vec<usize> = global.iter().zip(&local).map(|(g, l)| crate::tiles::round_up(*g, *l)).collect();
        self.launch(kernel, args, &rounded, Some(&local))
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
        let chosen = crate::OpenCl::serialised(crate::device::default_device).expect("an OpenCL device");
        let context = Context::builder().platform(chosen.platform).devices(chosen.device).build().unwrap();
        let broken = "__kernel void broken(__global float* x) { x[0] = undefined_name; }";
        let err = build_program(&context, &chosen, "broken.cl", broken, "-D X=1").unwrap_err().to_string();
        assert!(err.contains("broken.cl") && err.contains("undefined_name"), "{err}");
        let fine = "__kernel void fine(__global float* x) { x[0] = X; }";
        build_program(&context, &chosen, "fine.cl", fine, "-D X=1").unwrap();
    }

    #[test]
    fn kernel_names_index_to_their_program_and_a_duplicate_is_an_error() {
        let listings = [("a.cl", "k1;k2".to_owned()), ("b.cl", "k3".to_owned()), ("c.cl", String::new())];
        let index = index_kernel_names(&listings).unwrap();
        assert_eq!((index["k1"], index["k2"], index["k3"], index.len()), (0, 0, 1, 3));
        let twice = [("a.cl", "k1;k2".to_owned()), ("b.cl", "k2".to_owned())];
        let err = index_kernel_names(&twice).unwrap_err().to_string();
        assert!(err.contains("k2") && err.contains("a.cl") && err.contains("b.cl"), "{err}");
    }

    /// Every name a launcher can use resolves, in every configuration the
    /// tests run (the GPU variants forced on a CPU included).
    #[test]
    fn every_kernel_a_launcher_names_is_in_the_table() {
        let configs = [
            crate::Config::default(),
            crate::Config { local_gemm: Some(true), im2col_rows: Some(true), ..crate::Config::default() },
        ];
        for config in configs {
            let rt = crate::OpenCl::with_config(None, &config).expect("an OpenCL device").rt;
            let table = lock(&rt.kernels);
            assert!(table.values().all(|e| e.max_group >= 1));
            for kernel in crate::kernel_names::ALL {
                assert!(table.contains_key(kernel.name()), "{} is not in {:?}", kernel.name(), table.keys());
            }
            assert_eq!(table.len(), crate::kernel_names::ALL.len(), "a kernel no launcher names: {:?}", table.keys());
        }
    }

    const QUIET_CHILD: &str = "KERNELS_OPENCL_TEST_QUIET_BUILD_CHILD";

    /// Child half of the test below: builds a program whose source warns.
    #[test]
    fn quiet_build_child() {
        if std::env::var_os(QUIET_CHILD).is_none() {
            return;
        }
        let chosen = crate::OpenCl::serialised(crate::device::default_device).expect("an OpenCL device");
        let context = Context::builder().platform(chosen.platform).devices(chosen.device).build().unwrap();
        let warns = "#warning kernels_opencl_probe\n__kernel void fine(__global float* x) { x[0] = X; }";
        build_program(&context, &chosen, "warns.cl", warns, "-D X=1").unwrap();
    }

    /// A build that warns prints nothing to stderr, unless
    /// KERNELS_OPENCL_BUILD_LOG=1 asks for the log. Runs in a child process
    /// (compilers write to the process's stderr, which libtest does not
    /// capture) with PoCL's own kernel cache off, so the program compiles.
    #[test]
    fn build_warnings_stay_off_stderr_unless_the_log_is_asked_for() {
        let run = |log: Option<&str>| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "runtime::tests::quiet_build_child", "--nocapture", "--test-threads=1"])
                .env(QUIET_CHILD, "1")
                .env("POCL_KERNEL_CACHE", "0")
                .env_remove(BUILD_LOG_ENV);
            if let Some(v) = log {
                cmd.env(BUILD_LOG_ENV, v);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let quiet = run(None);
        assert!(!quiet.contains("warning"), "a default build printed: {quiet}");
        let verbose = run(Some("1"));
        assert!(verbose.contains("kernels_opencl_probe") && verbose.contains("warns.cl"), "{verbose}");
    }
}
