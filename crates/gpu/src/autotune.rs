//! Tile shapes of matrix products and convolutions chosen per layer by timing
//! the candidates on the adapter (autotune), instead of a fixed heuristic.
//!
//! While a plan is built, each Conv and MatMul/Gemm whose candidates are more
//! than one (64×64 and 128×128 plain tiles, cooperative matrices in f16) runs
//! each candidate on scratch buffers of its shapes filled with random values,
//! and keeps the fastest. Choices are keyed by the layer's shapes and kept per
//! adapter in a text file beside the pipeline cache
//! ([`crate::disk_cache::CACHE_DIR_ENV`]), so a second load times nothing.
//!
//! On by default on hardware adapters; off on software ones (lavapipe: timing
//! every candidate on the CPU costs more than it gains) and when
//! `METAL_MPS_GPU_TILES` forces the tiles. [`AUTOTUNE_ENV`] or
//! [`crate::GpuOptions::autotune`] turn it on or off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::context::{GpuContext, COOP_K_FRAGMENTS};
use crate::lower::GpuOp;
use crate::ops::matmul::{tiles_forced, Tiles, FULL_GRID};
use crate::ops::{self, Binding};
use crate::pipeline_cache::Scalar;
use crate::pool::{BufferClass, PooledBuffer};
use metal_mps_ir::{Result, ValueId};

/// `on` or `off`: overrides the adapter's default (on for GPUs, off for
/// software adapters).
pub const AUTOTUNE_ENV: &str = "METAL_MPS_GPU_AUTOTUNE";

/// The file's first line; a file starting otherwise is ignored (and replaced).
const HEADER: &str = "# metal_mps autotune v3";

/// Products smaller than this many multiply-adds keep the heuristic's tiles:
/// their time is mostly launch overhead, the same for every candidate.
const MIN_MACS: usize = 1 << 20;

/// How long one timed round of a candidate runs, at least (repetitions of its
/// dispatch in one submission make up short kernels).
const ROUND: Duration = Duration::from_millis(2);
const ROUNDS: usize = 3;
const MAX_REPS: u32 = 50;

/// The choices of one adapter, in memory and (when a cache folder is set) on disk.
pub struct Tuner {
    /// The adapter's default: whether plans tune unless their options say otherwise.
    pub default_on: bool,
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    choices: HashMap<String, Tiles>,
    /// Choices made since the file was read or written.
    dirty: bool,
    /// Layers timed by this process.
    measured: usize,
}

impl Tuner {
    /// The tuner of an adapter: its file in the cache folder, read when it
    /// exists; the default from [`AUTOTUNE_ENV`], else on unless the adapter is
    /// a software one.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Tuner {
        let default_on = match std::env::var(AUTOTUNE_ENV).as_deref() {
            Ok("on") | Ok("1") => true,
            Ok("off") | Ok("0") => false,
            _ => info.device_type != wgpu::DeviceType::Cpu,
        };
        let path = crate::disk_cache::cache_dir().map(|d| d.join(file_name(info)));
        Tuner::open(default_on, path)
    }

    /// A tuner keeping its choices in `path` (none: memory only), starting
    /// from the choices the file holds.
    pub fn open(default_on: bool, path: Option<PathBuf>) -> Tuner {
        let choices = path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| parse(&text))
            .unwrap_or_default();
        Tuner {
            default_on,
            path,
            state: Mutex::new(State {
                choices,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The choice recorded for `key`.
    pub fn choice(&self, key: &str) -> Option<Tiles> {
        self.state().choices.get(key).copied()
    }

    /// Sets the choice for `key` (kept on disk at the next save), as if it had
    /// been timed fastest.
    pub fn record(&self, key: &str, tiles: Tiles) {
        let mut state = self.state();
        state.choices.insert(key.to_string(), tiles);
        state.dirty = true;
    }

    /// Layers timed by this tuner (choices found recorded are not counted).
    pub fn measured(&self) -> usize {
        self.state().measured
    }

    /// The file of the choices, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The fastest of `candidates` for the layer `key`: the recorded choice
    /// when it is one of them, else the fastest as timed. Each candidate is
    /// made ready by `prepare`, then all are timed by `time` in turn,
    /// three times round, each keeping its best: interleaved, a GPU still
    /// raising its clocks (or slowed by anything else for a while) slows every
    /// candidate alike instead of the first few. A candidate whose preparation
    /// or timing fails is passed over; `None` when none could be timed.
    pub fn choose<P>(
        &self,
        key: &str,
        candidates: &[Tiles],
        mut prepare: impl FnMut(Tiles) -> Result<P>,
        mut time: impl FnMut(&P) -> Result<Duration>,
    ) -> Option<Tiles> {
        if let Some(t) = self.choice(key).filter(|t| candidates.contains(t)) {
            return Some(t);
        }
        let mut timed: Vec<(Tiles, P, Duration)> = candidates
            .iter()
            .filter_map(|&t| Some((t, prepare(t).ok()?, Duration::MAX)))
            .collect();
        for _ in 0..ROUNDS {
            timed.retain_mut(|(_, p, best)| match time(p) {
                Ok(d) => {
                    *best = d.min(*best);
                    true
                }
                Err(_) => false,
            });
        }
        let best = timed
            .iter()
            .min_by_key(|(_, _, d)| *d)
            .map(|(t, _, _)| *t)?;
        self.record(key, best);
        self.state().measured += 1;
        Some(best)
    }

    /// Writes the choices if some were made since the last write: a temporary
    /// file renamed over the old one, so readers never see half a file.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut state = self.state();
        if !state.dirty {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut lines: Vec<String> = state
            .choices
            .iter()
            .map(|(k, t)| format!("{k}\t{}", tiles_name(*t)))
            .collect();
        lines.sort();
        let text = format!("{HEADER}\n{}\n", lines.join("\n"));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        match &result {
            Ok(()) => state.dirty = false,
            Err(_) => {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        result
    }
}

/// The adapter's file: its backend, vendor and device ids, and a checksum of
/// its name and driver (a new driver times again).
fn file_name(info: &wgpu::AdapterInfo) -> String {
    let id = format!("{}|{}|{}", info.name, info.driver, info.driver_info);
    format!(
        "autotune-{:?}-{:04x}-{:04x}-{:08x}.txt",
        info.backend,
        info.vendor,
        info.device,
        crc32fast::hash(id.as_bytes())
    )
    .to_lowercase()
}

/// `plain4x4`, `plain4x4k8` (K split in 8), `coop16` (128 x 128 outputs),
/// `coop16_64x128nhwck4` (64 x 128).
fn tiles_name(t: Tiles) -> String {
    match t {
        Tiles::Plain { tm, tn, .. } => format!("plain{tm}x{tn}{}", splits_suffix(t)),
        Tiles::Coop { ct, nhwc, .. } => {
            let block = match t.block() {
                (bm, bn) if (bm, bn) == Tiles::coop(ct).block() => String::new(),
                (bm, bn) => format!("_{bm}x{bn}"),
            };
            let layout = if nhwc { "nhwc" } else { "" };
            format!("coop{ct}{block}{layout}{}", splits_suffix(t))
        }
    }
}

fn splits_suffix(t: Tiles) -> String {
    match t.splits() {
        1 => String::new(),
        s => format!("k{s}"),
    }
}

/// The head of a name and its `k<splits>` ending (1 when there is none).
fn parse_splits(s: &str) -> Option<(&str, u32)> {
    match s.split_once('k') {
        Some((head, k)) => Some((head, k.parse().ok().filter(|&k| k >= 1)?)),
        None => Some((s, 1)),
    }
}

fn parse_tiles(s: &str) -> Option<Tiles> {
    if let Some(rest) = s.strip_prefix("coop") {
        let (head, splits) = parse_splits(rest)?;
        let (head, nhwc) = match head.strip_suffix("nhwc") {
            Some(head) => (head, true),
            None => (head, false),
        };
        let (ct, block) = match head.split_once('_') {
            Some((ct, block)) => (ct.parse::<u32>().ok()?, Some(block.split_once('x')?)),
            None => (head.parse().ok()?, None),
        };
        let mut tiles = Tiles::coop(ct);
        if let Some((bm, bn)) = block {
            let side = |b: &str| {
                b.parse::<u32>()
                    .ok()
                    .filter(|&b| b == 4 * ct || b == 8 * ct)
            };
            tiles = tiles.fragments(side(bm)? / ct, side(bn)? / ct);
        }
        if nhwc {
            tiles = tiles.nhwc();
        }
        return Some(tiles.split(splits));
    }
    let (tm, rest) = s.strip_prefix("plain")?.split_once('x')?;
    let (tn, splits) = parse_splits(rest)?;
    Some(Tiles::plain(tm.parse().ok()?, tn.parse().ok()?).split(splits))
}

/// The choices of a file's text; lines that do not parse are skipped, and a
/// file without the header holds none.
fn parse(text: &str) -> HashMap<String, Tiles> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return HashMap::new();
    }
    lines
        .filter_map(|l| {
            let (key, tiles) = l.split_once('\t')?;
            Some((key.to_string(), parse_tiles(tiles.trim())?))
        })
        .collect()
}

/// Whether plans built with `option` tune on this context.
pub(crate) fn enabled(ctx: &GpuContext, option: Option<bool>) -> bool {
    option.unwrap_or(ctx.tuner.default_on) && !tiles_forced()
}

/// Split-K runs of at least this many k-tiles keep the partial sums' extra
/// traffic small beside the product.
const MIN_SPLIT_TILES: usize = 8;

/// The split-K factors worth timing for a product whose grid has `grid`
/// workgroups and whose K axis has `k_tiles` tiles: for grids under
/// [`FULL_GRID`] (BERT-base's 768-wide products at batch 8 have 192 tiles of
/// 64 x 64: one or two workgroups per multiprocessor of an H100), the largest
/// power of two that keeps the grid within two such grids and every run at
/// least [`MIN_SPLIT_TILES`] long, and a quarter of it.
fn split_factors(grid: usize, k_tiles: usize) -> Vec<u32> {
    if grid >= FULL_GRID {
        return vec![];
    }
    let mut s = 1usize;
    while grid * s * 2 <= 2 * FULL_GRID && k_tiles / (s * 2) >= MIN_SPLIT_TILES {
        s *= 2;
    }
    [s, s / 4]
        .into_iter()
        .filter(|&f| f >= 2)
        .map(|f| f as u32)
        .collect()
}

/// The layer's key and its candidate tiles, for the ops tiles apply to. The
/// key names the candidates too: a choice made among others (cooperative
/// matrices turned off, say) is timed again when the set changes.
fn candidates(ctx: &GpuContext, op: &GpuOp, allow_coop: bool) -> Option<(String, Vec<Tiles>)> {
    let (key, dtype, (m, n, k, batch), nhwc) = match op {
        GpuOp::Conv {
            geometry: g,
            dtype,
            bias,
            residual,
            ..
        } => {
            if g.ic == g.group {
                return None; // depthwise: its own kernel, no tiles
            }
            let (m, n, k) = g.gemm_dims();
            let key = format!(
                "conv {dtype:?} b{} ic{} {}x{} oc{} {}x{} g{} k{:?} s{:?} d{:?} p{:?} bias{} res{}",
                g.batch,
                g.ic,
                g.ih,
                g.iw,
                g.oc,
                g.oh,
                g.ow,
                g.group,
                g.kernel,
                g.stride,
                g.dilation,
                g.pad,
                u8::from(bias.is_some()),
                u8::from(residual.is_some())
            );
            (key, *dtype, (m, n, k, g.group), g.nhwc_fits())
        }
        GpuOp::Gemm {
            gemm: g,
            dtype,
            c,
            residual,
            ..
        } => {
            let batch = g.batch.iter().product::<usize>().max(1);
            let key = format!(
                "gemm {dtype:?} m{} n{} k{} batch{:?} a{:?}{:?} b{:?}{:?} c{:?} res{}",
                g.m,
                g.n,
                g.k,
                g.batch,
                g.a_stride,
                g.a_batch_stride,
                g.b_stride,
                g.b_batch_stride,
                c.map(|c| c.1),
                u8::from(residual.is_some())
            );
            (key, *dtype, (g.m, g.n, g.k, batch), false)
        }
        _ => return None,
    };
    if m * n * k * batch < MIN_MACS {
        return None;
    }
    // A side shorter than a tile idles part of every workgroup: such tiles never win.
    let mut list = vec![Tiles::plain(4, 4)];
    let grid = m.div_ceil(64) * n.div_ceil(64) * batch;
    for splits in split_factors(grid, k.div_ceil(16)) {
        list.push(Tiles::plain(4, 4).split(splits));
    }
    if m >= 128 && n >= 128 {
        list.push(Tiles::plain(8, 8));
    }
    if let (Some(c), Scalar::F16, true) = (ctx.caps.coop, dtype, allow_coop) {
        let k_tiles = k.div_ceil((COOP_K_FRAGMENTS * c.size) as usize);
        let nhwc = nhwc && crate::ops::conv::nhwc_offered(ctx, dtype, allow_coop);
        for shape in coop_shapes(c.size, m, n, batch) {
            let (bm, bn) = shape.block();
            let splits = split_factors(m.div_ceil(bm) * n.div_ceil(bn) * batch, k_tiles);
            for coop in [Some(shape), nhwc.then(|| shape.nhwc())]
                .into_iter()
                .flatten()
            {
                list.push(coop);
                list.extend(splits.iter().map(|&s| coop.split(s)));
            }
        }
    }
    let names: Vec<String> = list.iter().map(|&t| tiles_name(t)).collect();
    let key = format!("{key} [{}]", names.join(" "));
    (list.len() > 1).then_some((key, list))
}

/// The cooperative-matrix tile shapes worth timing for an `m` x `n` output
/// over `batch` products on fragments of `ct`: the full 8 x 8 fragments where
/// both sides fill at least half of it; halves and quarters of it where they
/// waste less of their workgroups on padding, or where the full tiles leave
/// most of the GPU idle (their grid under [`FULL_GRID`]).
fn coop_shapes(ct: u32, m: usize, n: usize, batch: usize) -> Vec<Tiles> {
    let full = Tiles::coop(ct);
    let padded = |t: Tiles| {
        let (bm, bn) = t.block();
        m.div_ceil(bm) * bm * n.div_ceil(bn) * bn
    };
    let (bm, bn) = full.block();
    let small_grid = m.div_ceil(bm) * n.div_ceil(bn) * batch < FULL_GRID;
    [(8, 8), (4, 8), (8, 4), (4, 4)]
        .into_iter()
        .map(|(rows, cols)| full.fragments(rows, cols))
        .filter(|&t| {
            let (bm, bn) = t.block();
            let fits = m >= bm / 2 && n >= bn / 2;
            fits && (t == full || small_grid || padded(t) < padded(full))
        })
        .collect()
}

/// Bytes of distinct random values in a scratch input (size a power of two).
const RANDOM_BLOCK: u64 = 1 << 20;

/// Random values for the scratch inputs of timings, reused across layers.
#[derive(Default)]
pub(crate) struct Scratch {
    input: Option<(PooledBuffer, u64, Scalar)>,
    output: Option<(PooledBuffer, u64)>,
    partial: Option<(PooledBuffer, u64)>,
    nhwc: Option<(PooledBuffer, u64)>,
}

impl Scratch {
    /// A buffer of at least `bytes` of random `dtype` values (read-only: every
    /// operand of a timed layer may share it).
    fn input(&mut self, ctx: &GpuContext, bytes: u64, dtype: Scalar) -> Result<wgpu::Buffer> {
        if let Some((b, size, d)) = &self.input {
            if *size >= bytes && *d == dtype {
                return Ok((**b).clone());
            }
        }
        let size = bytes.next_power_of_two().max(256);
        let buffer = ctx.pool.acquire(BufferClass::Storage, size)?;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        // One block of random values repeated: tens of megabytes of them would
        // cost more to make than the timings they feed.
        let block = size.min(RANDOM_BLOCK);
        let bytes: Vec<u8> = match dtype {
            Scalar::F16 => (0..block / 2)
                .flat_map(|_| half::f16::from_f32(next()).to_le_bytes())
                .collect(),
            _ => (0..block / 4).flat_map(|_| next().to_le_bytes()).collect(),
        };
        for offset in (0..size).step_by(block as usize) {
            ctx.queue.write_buffer(&buffer, offset, &bytes);
        }
        let out = (*buffer).clone();
        self.input = Some((buffer, size, dtype));
        Ok(out)
    }

    /// A buffer of at least `bytes` for the output.
    fn output(&mut self, ctx: &GpuContext, bytes: u64) -> Result<wgpu::Buffer> {
        grown(&mut self.output, ctx, bytes)
    }

    /// A buffer of at least `bytes` for split-K partial sums.
    fn partial(&mut self, ctx: &GpuContext, bytes: u64) -> Result<wgpu::Buffer> {
        grown(&mut self.partial, ctx, bytes)
    }

    /// A buffer of at least `bytes` for an NHWC copy of the input.
    fn nhwc(&mut self, ctx: &GpuContext, bytes: u64) -> Result<wgpu::Buffer> {
        grown(&mut self.nhwc, ctx, bytes)
    }
}

/// The buffer in `slot`, replaced by a larger one when it holds less than `bytes`.
fn grown(
    slot: &mut Option<(PooledBuffer, u64)>,
    ctx: &GpuContext,
    bytes: u64,
) -> Result<wgpu::Buffer> {
    if let Some((b, size)) = slot {
        if *size >= bytes {
            return Ok((**b).clone());
        }
    }
    let size = bytes.next_power_of_two().max(256);
    let buffer = ctx.pool.acquire(BufferClass::Storage, size)?;
    let out = (*buffer).clone();
    *slot = Some((buffer, size));
    Ok(out)
}

/// Sets the tiles of a Conv or MatMul/Gemm op to the fastest candidate on
/// this adapter (recorded, or timed now on `scratch`); `bytes` gives each
/// value's size on the device. Other ops, and layers with one candidate, are
/// left as they are.
pub(crate) fn tune(
    ctx: &GpuContext,
    op: &mut GpuOp,
    allow_coop: bool,
    bytes: &(dyn Fn(ValueId) -> u64 + Sync),
    scratch: &mut Scratch,
) -> Result<()> {
    let Some((key, list)) = candidates(ctx, op, allow_coop) else {
        return Ok(());
    };
    if let Some(t) = ctx.tuner.choice(&key).filter(|t| list.contains(t)) {
        set_tiles(ctx, op, t);
        return Ok(());
    }
    let with_tiles = |tiles: Tiles| {
        let mut candidate = op.clone();
        set_tiles(ctx, &mut candidate, tiles);
        candidate
    };
    let ops: Vec<GpuOp> = list.iter().map(|&t| with_tiles(t)).collect();
    let buffers = Buffers::new(ctx, op, &ops, bytes, scratch)?;
    // Every candidate's pipelines are compiled at once (drivers compile in
    // parallel); a candidate that fails to build fails again, and is passed
    // over, when prepared.
    std::thread::scope(|s| {
        for c in &ops {
            let buffers = &buffers;
            s.spawn(move || buffers.calls(ctx, c, bytes).map(drop));
        }
    });
    let prepare = |tiles: Tiles| -> Result<(Tiles, Timed)> {
        let calls = buffers.calls(ctx, &with_tiles(tiles), bytes)?;
        Ok((tiles, prepare_timed(ctx, &calls)?))
    };
    let time = |(tiles, timed): &(Tiles, Timed)| {
        let took = run_timed(ctx, &timed.prepared, timed.reps);
        if ctx.pool.config().verbose {
            eprintln!(
                "[metal_mps gpu] autotune {key}: {} {took:?}",
                tiles_name(*tiles)
            );
        }
        took
    };
    if let Some(t) = ctx.tuner.choose(&key, &list, prepare, time) {
        set_tiles(ctx, op, t);
    }
    Ok(())
}

/// The scratch buffers a layer's candidates are timed on: random inputs, an
/// output, and partial sums and an NHWC copy as large as the largest
/// candidate needs (made before any candidate is prepared, so none is
/// replaced while a prepared candidate holds it).
struct Buffers {
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    partial: Option<wgpu::Buffer>,
    nhwc: Option<wgpu::Buffer>,
    out_value: ValueId,
}

impl Buffers {
    fn new(
        ctx: &GpuContext,
        op: &GpuOp,
        candidates: &[GpuOp],
        bytes: &dyn Fn(ValueId) -> u64,
        scratch: &mut Scratch,
    ) -> Result<Buffers> {
        let (GpuOp::Conv { dtype, .. } | GpuOp::Gemm { dtype, .. }) = op else {
            return Err(metal_mps_ir::Error::Invalid(
                "autotune of an op without tiles".into(),
            ));
        };
        let read = op.inputs().into_iter().map(bytes).max().unwrap_or(0);
        let most = |f: fn(&GpuOp) -> u64| candidates.iter().map(f).max().filter(|&b| b > 0);
        Ok(Buffers {
            input: scratch.input(ctx, read, *dtype)?,
            output: scratch.output(ctx, bytes(op.output()))?,
            partial: most(GpuOp::partial_bytes)
                .map(|b| scratch.partial(ctx, b))
                .transpose()?,
            nhwc: most(GpuOp::nhwc_bytes)
                .map(|b| scratch.nhwc(ctx, b))
                .transpose()?,
            out_value: op.output(),
        })
    }

    /// The calls of `candidate` on these buffers.
    fn calls(
        &self,
        ctx: &GpuContext,
        candidate: &GpuOp,
        bytes: &dyn Fn(ValueId) -> u64,
    ) -> Result<Vec<ops::Call>> {
        let mut candidate = candidate.clone();
        let (partial_bytes, nhwc_bytes) = (candidate.partial_bytes(), candidate.nhwc_bytes());
        let partial = self.partial.as_ref().filter(|_| partial_bytes > 0);
        let nhwc = self.nhwc.as_ref().filter(|_| nhwc_bytes > 0);
        if let GpuOp::Conv { partial: p, .. } | GpuOp::Gemm { partial: p, .. } = &mut candidate {
            *p = partial.map(|_| PARTIAL);
        }
        if let GpuOp::Conv { nhwc: c, .. } = &mut candidate {
            *c = nhwc.map(|_| NHWC_COPY);
        }
        let bind = |v: ValueId| -> Binding {
            match (partial, nhwc, v) {
                (Some(p), _, PARTIAL) => Binding::whole(p, partial_bytes),
                (_, Some(c), NHWC_COPY) => Binding::whole(c, nhwc_bytes),
                _ if v == self.out_value => Binding::whole(&self.output, bytes(v)),
                _ => Binding::whole(&self.input, bytes(v)),
            }
        };
        // Unused operands are read-only: the output cannot stand in for them.
        let dummy = Binding::whole(&self.input, 16);
        candidate.calls(ctx, &bind, &dummy)
    }
}

/// Stand for a timed candidate's partial sums and NHWC copy (not values of the plan).
const PARTIAL: ValueId = ValueId::MAX;
const NHWC_COPY: ValueId = ValueId::MAX - 1;

/// Gives `op` the tiles `to`; a convolution's geometry is fitted to them
/// ([`crate::ops::conv::ConvGeometry::fit_to`]), so each candidate is timed on
/// the weights' order and channels it would read.
fn set_tiles(ctx: &GpuContext, op: &mut GpuOp, to: Tiles) {
    match op {
        GpuOp::Conv {
            tiles, geometry, ..
        } => {
            *tiles = to;
            geometry.fit_to(ctx, to);
        }
        GpuOp::Gemm { tiles, .. } => *tiles = to,
        _ => {}
    }
}

/// A candidate ready to be timed: its calls prepared and run once (warm),
/// and how many repetitions of them last a round ([`ROUND`]).
struct Timed {
    _params: Option<PooledBuffer>,
    prepared: Vec<ops::Prepared>,
    reps: u32,
}

/// Prepares `calls` for timing. A candidate the device refuses (validation)
/// fails here, not the context.
fn prepare_timed(ctx: &GpuContext, calls: &[ops::Call]) -> Result<Timed> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let timed = ops::prepare(ctx, calls).and_then(|(params, prepared)| {
        run_timed(ctx, &prepared, 1)?;
        let once = run_timed(ctx, &prepared, 1)?;
        let reps = ROUND.as_secs_f64() / once.as_secs_f64().max(1e-6);
        Ok(Timed {
            _params: params,
            prepared,
            reps: reps.clamp(1.0, MAX_REPS as f64) as u32,
        })
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(metal_mps_ir::Error::Device(format!(
            "candidate refused: {e}"
        ))),
        None => timed,
    }
}

/// Time per run of `prepared`, submitted `reps` times back to back.
fn run_timed(ctx: &GpuContext, prepared: &[ops::Prepared], reps: u32) -> Result<Duration> {
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("metal_mps autotune"),
        });
    for _ in 0..reps {
        ops::record(&mut encoder, prepared);
    }
    let commands = encoder.finish();
    let start = Instant::now();
    let index = ctx.queue.submit([commands]);
    ctx.wait_for(index)?;
    Ok(start.elapsed() / reps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Tiles = Tiles::plain(4, 4);
    const LARGE: Tiles = Tiles::plain(8, 8);
    const SPLIT: Tiles = Tiles::plain(4, 4).split(16);
    const COOP: Tiles = Tiles::coop(16);

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("metal_mps_tune_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn ms(v: u64) -> Result<Duration> {
        Ok(Duration::from_millis(v))
    }

    /// A preparation that always succeeds.
    fn ready(t: Tiles) -> Result<Tiles> {
        Ok(t)
    }

    fn refused() -> metal_mps_ir::Error {
        metal_mps_ir::Error::Device("no".into())
    }

    #[test]
    fn the_fastest_candidate_wins_in_interleaved_rounds_and_is_timed_once() {
        let tuner = Tuner::open(true, None);
        let mut timed = Vec::new();
        // The device is slow for its first three timings (clocks rising):
        // every candidate's first round falls there, and its later rounds
        // decide.
        let pick = tuner.choose("a", &[SMALL, LARGE, COOP], ready, |&t| {
            timed.push(t);
            let warming = if timed.len() <= 3 { 10 } else { 0 };
            ms(warming + if t == LARGE { 2 } else { 3 })
        });
        assert_eq!(pick, Some(LARGE));
        assert_eq!(timed, [SMALL, LARGE, COOP].repeat(ROUNDS));
        let again = tuner.choose("a", &[SMALL, LARGE, COOP], ready, |_| panic!("timed twice"));
        assert_eq!(again, Some(LARGE));
        assert_eq!(tuner.measured(), 1);
    }

    #[test]
    fn candidates_that_fail_are_passed_over() {
        let tuner = Tuner::open(true, None);
        let unprepared = |t| if t == COOP { Err(refused()) } else { Ok(t) };
        let pick = tuner.choose("a", &[SMALL, COOP], unprepared, |_| ms(5));
        assert_eq!(pick, Some(SMALL));
        // LARGE is fastest in the first round, then fails.
        let mut rounds = 0;
        let pick = tuner.choose("b", &[SMALL, LARGE], ready, |&t| match t {
            LARGE if rounds > 0 => Err(refused()),
            LARGE => {
                rounds += 1;
                ms(1)
            }
            _ => ms(5),
        });
        assert_eq!(pick, Some(SMALL));
        let none = tuner.choose("c", &[SMALL], ready, |_| Err(refused()));
        assert_eq!(none, None);
        assert_eq!(tuner.choice("c"), None);
    }

    #[test]
    fn choices_persist_and_a_stale_or_damaged_file_is_not_trusted() {
        let path = temp_file("choices.txt");
        let tuner = Tuner::open(true, Some(path.clone()));
        tuner.choose("conv x", &[SMALL, COOP], ready, |&t| {
            ms(if t == COOP { 1 } else { 2 })
        });
        tuner.choose("gemm y", &[SMALL, LARGE], ready, |&t| {
            ms(if t == SMALL { 1 } else { 2 })
        });
        tuner.save().unwrap();

        // A later process reads them back and times nothing.
        let next = Tuner::open(true, Some(path.clone()));
        assert_eq!(next.choice("conv x"), Some(COOP));
        let pick = next.choose("gemm y", &[SMALL, LARGE], ready, |_| panic!("timed again"));
        assert_eq!(pick, Some(SMALL));
        // A recorded choice this adapter no longer offers is timed again.
        let pick = next.choose("conv x", &[SMALL, LARGE], ready, |&t| {
            ms(if t == LARGE { 1 } else { 2 })
        });
        assert_eq!((pick, next.measured()), (Some(LARGE), 1));

        // Lines that do not parse are skipped; the others still count.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{text}garbage\nconv z\tplainAxB\ngemm w\tcoop\n"),
        )
        .unwrap();
        let damaged = Tuner::open(true, Some(path.clone()));
        assert_eq!(damaged.choice("gemm y"), Some(SMALL));
        assert_eq!(damaged.choice("conv z"), None);
        assert_eq!(damaged.choice("gemm w"), None);

        // Another format version: nothing is trusted.
        std::fs::write(&path, text.replace("v3", "v2")).unwrap();
        assert_eq!(Tuner::open(true, Some(path.clone())).choice("gemm y"), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn split_factors_fill_small_grids_only() {
        // ResNet-50's 3x3 512->512 at batch 1: 8 workgroups, K = 4608 (288 k-tiles of 16).
        assert_eq!(split_factors(8, 288), [32, 8]);
        // BERT-base's FFN down-projection at batch 1 on 128x128 tiles: K = 3072 (96 of 32).
        assert_eq!(split_factors(6, 96), [8, 2]);
        assert_eq!(split_factors(24, 24), [2]);
        // BERT-base's 768 x 768 products at batch 8 (K = 768: 48 k-tiles of 16).
        assert_eq!(split_factors(192, 48), [2]);
        // Runs shorter than 8 k-tiles, or a full grid: no split.
        assert_eq!(split_factors(8, 15), Vec::<u32>::new());
        assert_eq!(split_factors(264, 1000), Vec::<u32>::new());
        assert_eq!(split_factors(133, 1000), [2]);
        assert_eq!(split_factors(132, 1000), [4]);
    }

    #[test]
    fn smaller_cooperative_tiles_where_the_full_ones_waste_or_idle() {
        let shapes = |m, n, batch| -> Vec<(usize, usize)> {
            coop_shapes(16, m, n, batch)
                .into_iter()
                .map(|t| t.block())
                .collect()
        };
        // ResNet-50 at batch 32, 64 output channels of 56x56: half of every 128-row tile idle.
        assert_eq!(shapes(64, 100352, 1), [(128, 128), (64, 128), (64, 64)]);
        // 256 channels of 56x56 at batch 32: the full tiles fill the GPU.
        assert_eq!(shapes(256, 100352, 1), [(128, 128)]);
        // 512 channels of 7x7 at batch 1: 49 columns fill too little of 128.
        assert_eq!(shapes(512, 49, 1), [(128, 64), (64, 64)]);
        // ... and of 14x14: 8 workgroups of 128 x 128 (of 264) try them all.
        assert_eq!(
            shapes(512, 196, 1),
            [(128, 128), (64, 128), (128, 64), (64, 64)]
        );
        // Too small for any but the quarter tiles.
        assert_eq!(shapes(40, 40, 1), [(64, 64)]);
    }

    #[test]
    fn tile_names_round_trip() {
        let nhwc = [COOP.nhwc(), COOP.nhwc().split(2), Tiles::coop(8).nhwc()];
        let shapes = [COOP.fragments(4, 8), COOP.fragments(8, 4).nhwc().split(2)];
        for t in [SMALL, LARGE, SPLIT, COOP, COOP.split(4), Tiles::coop(8)]
            .into_iter()
            .chain(nhwc)
            .chain(shapes)
            .chain([Tiles::coop(8).fragments(4, 4)])
        {
            assert_eq!(parse_tiles(&tiles_name(t)), Some(t));
        }
        assert_eq!(tiles_name(COOP.fragments(4, 8)), "coop16_64x128");
        assert_eq!(
            tiles_name(Tiles::coop(8).fragments(4, 4).nhwc().split(2)),
            "coop8_32x32nhwck2"
        );
        assert_eq!(parse_tiles("coop16_64x64x"), None);
        assert_eq!(parse_tiles("coop16_48x128"), None);
        assert_eq!(parse_tiles("coop16_64"), None);
        assert_eq!(tiles_name(SPLIT), "plain4x4k16");
        assert_eq!(tiles_name(COOP.split(4)), "coop16k4");
        assert_eq!(tiles_name(COOP.nhwc().split(4)), "coop16nhwck4");
        assert_eq!(parse_tiles("coopnhwc"), None);
        assert_eq!(parse_tiles("plain4"), None);
        assert_eq!(parse_tiles("plain4x4k0"), None);
        assert_eq!(parse_tiles("plain4x4kx"), None);
        assert_eq!(parse_tiles("coopx"), None);
    }
}
