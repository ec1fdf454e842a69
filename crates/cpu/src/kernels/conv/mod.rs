//! Convolution as a packed matrix product, 1-D and 2-D ([`nd`]: three or more axes;
//! [`depthwise`]: one input channel per group, its own kernel): the weights are packed
//! once ([`ConvWeights`]); the input taps reach the product through im2col
//! ([`im2col`]: strided, pointwise and small convolutions) or straight from a
//! zero-padded copy of the input ([`direct`]: stride 1, and strided
//! convolutions with few output channels); the bias, an optional
//! residual, the fused activation and a fused 2×2 max pool are applied as the
//! output is stored.

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_lanes;
mod direct;
mod im2col;
mod nd;
mod pixel_major;
mod pool2x2;

use super::matmul::{as_f32, f32_output};
use super::packed::{self, Columns, Epilogue, PackedLhs, PackedRhs};
use super::{with_local, SharedOut};
use crate::Out;
use depthwise::{depthwise, is_depthwise, Layout};
use direct::direct_fits;
use im2col::{TapOffsets, PADDING};
use metal_mps_ir::{invalid, unsupported, Activation, ConvAttrs, Result, Tensor};
use pixel_major::pixel_major_fits;
use pool2x2::pool_pairs;
use std::cell::RefCell;

/// 2-D geometry after 1-D inputs are seen as height 1.
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
}

/// A convolution's weights packed for the matrix product, one matrix per group.
#[derive(Debug)]
pub struct ConvWeights {
    shape: Vec<usize>,
    packing: Packing,
}

/// How the weights are packed, which sets the product's orientation.
#[derive(Debug)]
enum Packing {
    /// Output channels as the rows of `A`, output pixels in column tiles.
    Rows(Vec<PackedLhs>),
    /// Output channels as the column tiles of `B`, for outputs of few pixels
    /// ([`pixel_major`]).
    Columns(Vec<PackedRhs>),
    /// A depthwise convolution's weights as in the model, `[M, kH·kW]`
    /// ([`depthwise`]).
    Depthwise(Vec<f32>),
}

impl ConvWeights {
    /// Packs `w` (`[M, C/group, kH, kW]` or `[M, C/group, kW]`) for the
    /// convolution `a`, whose output planes have `pixels` pixels when that is
    /// known before running (it chooses the packing).
    pub fn new(w: &Tensor, a: &ConvAttrs, pixels: Option<usize>) -> Result<ConvWeights> {
        let group = a.group;
        let shape = w.shape().to_vec();
        if shape.len() > 4 {
            return unsupported!(
                "packed weights of rank {} (1-D and 2-D convolutions)",
                shape.len()
            );
        }
        if shape.len() < 3 || group == 0 || !shape[0].is_multiple_of(group) {
            return invalid!("Conv weight {shape:?} does not split into {group} groups");
        }
        let ws = as_f32(w)?;
        let mg = shape[0] / group;
        let k: usize = shape[1..].iter().product();
        let matrix = |gi: usize| &ws[gi * mg * k..][..mg * k];
        let packing = if is_depthwise(&shape, group) {
            Packing::Depthwise(ws.to_vec())
        } else if pixel_major_fits(pixels, mg, a.max_pool_2x2) {
            Packing::Columns(
                (0..group)
                    .map(|gi| PackedRhs::pack_transposed(matrix(gi), mg, k))
                    .collect(),
            )
        } else {
            Packing::Rows(
                (0..group)
                    .map(|gi| PackedLhs::pack(matrix(gi), mg, k))
                    .collect(),
            )
        };
        Ok(ConvWeights { shape, packing })
    }

    /// Weights of a depthwise convolution packed for the matrix product (for
    /// the windows its kernel leaves to it).
    fn rows_for_depthwise(&self, w: &[f32], group: usize) -> ConvWeights {
        let mg = self.shape[0] / group;
        let k: usize = self.shape[1..].iter().product();
        ConvWeights {
            shape: self.shape.clone(),
            packing: Packing::Rows(
                (0..group)
                    .map(|gi| PackedLhs::pack(&w[gi * mg * k..][..mg * k], mg, k))
                    .collect(),
            ),
        }
    }

    /// How the weights are laid out, for profiles: `" (packed)"`,
    /// `" (pixel-major)"` or `" (depthwise)"`.
    pub fn kind(&self) -> &'static str {
        match self.packing {
            Packing::Rows(_) => " (packed)",
            Packing::Columns(_) => " (pixel-major)",
            Packing::Depthwise(_) => " (depthwise)",
        }
    }

    /// Bytes of the packed panels.
    pub fn bytes(&self) -> usize {
        match &self.packing {
            Packing::Rows(groups) => groups.iter().map(PackedLhs::bytes).sum(),
            Packing::Columns(groups) => groups.iter().map(PackedRhs::bytes).sum(),
            Packing::Depthwise(w) => w.len() * 4,
        }
    }
}

/// Conv with weights packed for this call (the evaluator's path).
pub fn conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        return invalid!("Conv input is {} but weight is {}", x.dtype(), w.dtype());
    }
    if x.rank() > 4 {
        return nd::conv_nd(a, x, w, bias, residual, out);
    }
    let g = geometry(a, x, w.shape())?;
    let weights = ConvWeights::new(w, a, Some(g.oh * g.ow))?;
    conv_packed(a, x, &weights, bias, residual, out)
}

/// Conv with packed weights; `residual`, when given, has the output's shape
/// and is added before the activation.
pub fn conv_packed(
    a: &ConvAttrs,
    x: &Tensor,
    w: &ConvWeights,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    let g = geometry(a, x, &w.shape)?;
    let group = a.group;
    let (cg, mg) = (g.c / group, g.m / group);
    let k = cg * g.kh * g.kw;
    let ohw = g.oh * g.ow;
    let xs = as_f32(x)?;
    let bs = bias.map(as_f32).transpose()?;
    if let Some(b) = &bs {
        if b.len() != g.m {
            return invalid!(
                "Conv bias has {} values for {} output channels",
                b.len(),
                g.m
            );
        }
    }
    let mut shape = vec![g.n, g.m];
    if x.rank() == 4 {
        shape.push(g.oh);
    }
    shape.push(g.ow);
    let pooled = match (a.max_pool_2x2, x.rank()) {
        (false, _) => None,
        (true, 4) => Some(vec![g.n, g.m, g.oh / 2, g.ow / 2]),
        (true, _) => return unsupported!("a 2×2 max pool fused into a 1-D Conv"),
    };
    let rs = match residual {
        Some(r) if r.shape() != shape => {
            return invalid!(
                "Conv residual {:?} differs from the output {:?}",
                r.shape(),
                shape
            )
        }
        Some(r) => Some(as_f32(r)?),
        None => None,
    };
    let layout = match &w.packing {
        Packing::Depthwise(dw) => match Layout::new(&g) {
            Some(layout) => Some((layout, dw)),
            None if mg * ohw == 0 => None,
            None => {
                let rows = w.rows_for_depthwise(dw, group);
                return conv_packed(a, x, &rows, bias, residual, out);
            }
        },
        _ => None,
    };
    if layout.is_none() && g.h * g.w >= PADDING as usize {
        return unsupported!("Conv input planes of {}×{} elements", g.h, g.w);
    }
    let conv = Product {
        g: &g,
        group,
        k,
        x: &xs,
        rows: match &w.packing {
            Packing::Rows(groups) => groups,
            Packing::Columns(_) | Packing::Depthwise(_) => &[],
        },
        bias: bs.as_deref(),
        residual: rs.as_deref(),
        activation: a.activation,
        pool: pooled.is_some(),
    };
    let out_shape = pooled.unwrap_or_else(|| shape.clone());
    f32_output(out, x.dtype(), out_shape, |y| {
        if y.is_empty() || mg * ohw == 0 {
            return Ok(());
        }
        if let Some((layout, dw)) = &layout {
            depthwise(&conv, layout, dw, y);
            return Ok(());
        }
        let direct = matches!(w.packing, Packing::Rows(_)) && direct_fits(&g, group);
        let product = |dst| match &w.packing {
            Packing::Columns(groups) => conv.pixel_major(groups, dst),
            Packing::Rows(_) if direct => conv.direct(dst),
            Packing::Rows(_) | Packing::Depthwise(_) => conv.packed(dst),
        };
        if conv.pool && !direct {
            // Only the direct path pools as it stores: the whole output
            // first, then the pool.
            let mut full = vec![0f32; shape.iter().product()];
            product(SharedOut(full.as_mut_ptr()));
            let (pw, ph) = (g.ow / 2, g.oh / 2);
            for (plane, out) in full.chunks_exact(ohw).zip(y.chunks_exact_mut(ph * pw)) {
                for (py, out) in out.chunks_exact_mut(pw).enumerate() {
                    let rows = &plane[2 * py * g.ow..][..2 * g.ow];
                    pool_pairs(&rows[..g.ow], &rows[g.ow..], out);
                }
            }
        } else {
            product(SharedOut(y.as_mut_ptr()));
        }
        Ok(())
    })
}

/// One convolution as products of packed weights and column tiles.
struct Product<'a> {
    g: &'a Geometry,
    group: usize,
    /// Taps per output channel: `C/group · kH · kW`.
    k: usize,
    x: &'a [f32],
    /// Each group's weights as the rows of `A` (empty for the pixel-major product).
    rows: &'a [PackedLhs],
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    activation: Activation,
    /// A fused 2×2, stride-2 max pool (see [`ConvAttrs::max_pool_2x2`]): only
    /// [`Product::direct`] applies it.
    pool: bool,
}

impl Product<'_> {
    fn mg(&self) -> usize {
        self.g.m / self.group
    }

    fn panels(&self) -> usize {
        self.mg().div_ceil(packed::MR)
    }

    /// The bias of output channel `ch` of group `gi` (0 without one).
    fn channel_bias(&self, gi: usize, ch: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[gi * self.mg() + ch])
    }

    /// Input channels of image `n`, group `gi`.
    fn input(&self, n: usize, gi: usize) -> &[f32] {
        let (g, cg) = (self.g, self.g.c / self.group);
        &self.x[(n * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w]
    }

    /// Output rows `panels` of image `n`, group `gi`, for the column tiles.
    ///
    /// Calls that run at the same time must write disjoint rows or tiles.
    fn multiply(
        &self,
        n: usize,
        gi: usize,
        panels: std::ops::Range<usize>,
        tiles: &[Columns],
        offsets: Option<&[usize]>,
        dst: SharedOut,
    ) {
        let (mg, ohw) = (self.mg(), self.g.oh * self.g.ow);
        let plane = (n * self.g.m + gi * mg) * ohw;
        let ep = Epilogue {
            bias: self.bias.map(|b| &b[gi * mg..][..mg]),
            residual: self.residual.map(|r| r[plane..].as_ptr()),
            activation: self.activation,
        };
        // SAFETY: the tiles lie in output plane `plane` (rows of `mg`
        // channels, `ohw` apart) and their `B` reads in the caller's
        // buffers; concurrent calls write disjoint elements of the output,
        // which outlives them; the residual has the output's shape.
        unsafe {
            packed::multiply(
                &self.rows[gi],
                panels,
                tiles,
                offsets,
                dst.at(plane),
                ohw,
                &ep,
            )
        };
    }
}

/// Column phase `rx` of stride `sw` of input row `src` with `pl` columns of
/// left padding: `row[q]` is padded column `q·sw + rx`, input column
/// `q·sw + rx - pl`, zero outside the input (the padded copies of
/// the direct and the depthwise paths).
pub(super) fn gather_phase(pl: usize, sw: usize, rx: usize, src: &[f32], row: &mut [f32]) {
    // The columns before `first` and from `end` on are padding.
    let (first, end) = phase_span(pl, sw, rx, src.len(), row.len());
    row[..first].fill(0.0);
    row[end..].fill(0.0);
    copy_phase(pl, sw, rx, src, row);
}

/// The columns `first..end` of a phase row of `cols` that input columns fill
/// (see [`gather_phase`]).
fn phase_span(pl: usize, sw: usize, rx: usize, src_len: usize, cols: usize) -> (usize, usize) {
    let first = pl.saturating_sub(rx).div_ceil(sw).min(cols);
    let end = (src_len + pl)
        .saturating_sub(rx)
        .div_ceil(sw)
        .clamp(first, cols);
    (first, end)
}

/// [`gather_phase`] without the padding: only the columns `src` fills are written.
#[inline(always)]
pub(super) fn copy_phase(pl: usize, sw: usize, rx: usize, src: &[f32], row: &mut [f32]) {
    let (first, end) = phase_span(pl, sw, rx, src.len(), row.len());
    if first == end {
        return;
    }
    let start = first * sw + rx - pl;
    let inside = &mut row[first..end];
    if sw == 1 {
        copy_short(&src[start..][..end - first], inside);
    } else {
        for (k, d) in inside.iter_mut().enumerate() {
            *d = src[start + k * sw];
        }
    }
}

/// `dst.copy_from_slice(src)` inlined: a padded copy's rows are tens of
/// floats, where a `memmove` call per row costs as much as the copy (in the
/// widest build these are vector moves).
#[inline(always)]
fn copy_short(src: &[f32], dst: &mut [f32]) {
    const LANES: usize = 16;
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; LANES] = s.try_into().expect("LANES floats");
        let d: &mut [f32; LANES] = d.try_into().expect("LANES floats");
        *d = *s;
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// The output channels of a job divided among tasks: `count` splits of
/// `panels` row panels, as even as panels allow.
#[derive(Clone, Copy)]
struct ChannelSplits {
    count: usize,
    panels: usize,
}

impl ChannelSplits {
    /// Splits so that `jobs` jobs times the splits keep every thread busy
    /// (one split when the jobs do).
    fn new(jobs: usize, panels: usize) -> ChannelSplits {
        let threads = rayon::current_num_threads();
        let count = if jobs >= 2 * threads {
            1
        } else {
            (4 * threads).div_ceil(jobs.max(1)).min(panels).max(1)
        };
        ChannelSplits { count, panels }
    }

    /// The row panels of split `si`.
    fn range(self, si: usize) -> std::ops::Range<usize> {
        si * self.panels / self.count..(si + 1) * self.panels / self.count
    }
}

thread_local! {
    /// The zero-padded input of [`Product::direct`].
    static PADDED: RefCell<Vec<f32>> = RefCell::default();
    static SCRATCH: RefCell<Buffers> = RefCell::default();
}

/// A thread's scratch memory for convolutions (see [`with_local`]).
#[derive(Default)]
struct Buffers {
    /// A [`Product::direct`] job's block of output.
    block: Vec<f32>,
    /// The product's `B` operand: the chunk's taps in column panels.
    panels: Vec<f32>,
    /// The chunk's input offsets per kernel tap.
    taps: TapOffsets,
}

/// Channels and groups of input `xs` and weight `wsh` (same rank) agree, and
/// `kernel_shape`, when given, is the weight's.
fn check_shapes(a: &ConvAttrs, xs: &[usize], wsh: &[usize]) -> Result<()> {
    let group = a.group;
    if group == 0 || wsh[1].checked_mul(group) != Some(xs[1]) || !wsh[0].is_multiple_of(group) {
        return invalid!(
            "Conv: input has {} channels, weight {:?} with group {group}",
            xs[1],
            wsh
        );
    }
    if !a.window.kernel.is_empty() && a.window.kernel[..] != wsh[2..] {
        return invalid!(
            "Conv kernel_shape {:?} differs from the weight's {:?}",
            a.window.kernel,
            &wsh[2..]
        );
    }
    Ok(())
}

fn geometry(a: &ConvAttrs, x: &Tensor, wsh: &[usize]) -> Result<Geometry> {
    let spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&spatial) || wsh.len() != x.rank() {
        return unsupported!(
            "Conv with input rank {} and weight rank {} (1-D and 2-D convolutions only)",
            x.rank(),
            wsh.len()
        );
    }
    let xs = x.shape();
    check_shapes(a, xs, wsh)?;
    let mut dims = Vec::new();
    for s in 0..spatial {
        let (o, b, _) = a.window.output_dim(s, xs[2 + s], wsh[2 + s])?;
        dims.push((
            o,
            b,
            a.window.strides.get(s).copied().unwrap_or(1),
            a.window.dilations.get(s).copied().unwrap_or(1),
        ));
    }
    if spatial == 1 {
        dims.insert(0, (1, 0, 1, 1));
    }
    let h = if spatial == 2 { xs[2] } else { 1 };
    let kh = if spatial == 2 { wsh[2] } else { 1 };
    Ok(Geometry {
        n: xs[0],
        c: xs[1],
        h,
        w: *xs.last().expect("rank checked"),
        m: wsh[0],
        kh,
        kw: *wsh.last().expect("rank checked"),
        oh: dims[0].0,
        ow: dims[1].0,
        stride: [dims[0].2, dims[1].2],
        dilation: [dims[0].3, dims[1].3],
        pad: [dims[0].1, dims[1].1],
    })
}
