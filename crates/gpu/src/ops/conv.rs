//! Launcher of 1-D and 2-D convolution as implicit GEMM (`conv_io.wgsl` on
//! `gemm_tiled.wgsl` or `gemm_coop.wgsl`). No im2col buffer: the GEMM's B tile
//! is gathered from the input while loading workgroup memory. Convolutions
//! whose groups have one input channel (depthwise) run `depthwise.wgsl`.

use super::matmul::{
    split_sum, tail_bindings, tile_key, wide_loads, wide_out, wide_view, with_activation,
    SplitEpilogue, Tiles,
};
use super::{grid, u32_of, Binding, Call, Params};
use crate::context::COOP_K_FRAGMENTS;
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Op, Out, Result, Tensor, UnaryOp};

/// Geometry of an NCHW convolution (1-D: `ih = oh = kh = 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub ic: usize,
    pub ih: usize,
    pub iw: usize,
    pub oc: usize,
    pub oh: usize,
    pub ow: usize,
    pub group: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Begin pads (end pads only shape the output).
    pub pad: [usize; 2],
    /// The weights are `[OC, KH, KW, IC / group + ic_pad]`
    /// ([`tap_major_weights`]) instead of ONNX's `[OC, IC / group, KH, KW]`;
    /// needs [`TAP_MAJOR_MIN_CHANNELS`] input channels per group, except on
    /// NHWC tiles (which read eight channels of one tap at a time).
    pub tap_major: bool,
    /// Zero input channels appended (NHWC tiles, one group, tap-major
    /// weights only): the NHWC copy of the input and the weights then have
    /// `ic + ic_pad` channels, a multiple of 8 (a stem's 3 channels as 8).
    pub ic_pad: usize,
}

/// The fewest input channels per group for tap-major weights: the deepest
/// k-tile of the product kernels (`gemm_coop.wgsl` on 16x16 fragments; the
/// plain tiles take 16), so that a k-tile spans at most two taps.
pub const TAP_MAJOR_MIN_CHANNELS: usize = COOP_K_FRAGMENTS as usize * 16;

/// `w` (`[OC, ICg, taps...]`, any element type) reordered to `[OC, taps...,
/// ICg + ic_pad]`, the `ic_pad` channels zero.
pub fn tap_major_weights(w: &Tensor, ic_pad: usize) -> Result<Tensor> {
    if w.rank() < 3 {
        return Err(Error::Invalid(format!(
            "convolution weights of shape {:?}",
            w.shape()
        )));
    }
    let perm: Vec<usize> = std::iter::once(0)
        .chain(2..w.rank())
        .chain(std::iter::once(1))
        .collect();
    let mut out =
        metal_mps_cpu::eval_op(&Op::Transpose { perm }, &[Some(w)], 1, &mut Out::fresh())?;
    let t = out
        .pop()
        .ok_or_else(|| Error::Invalid("Transpose returned no output".into()))?;
    if ic_pad == 0 {
        return Ok(t);
    }
    // Zero bits are zero in every float type.
    let mut shape = t.shape().to_vec();
    let icg = shape.pop().unwrap_or(1);
    let row = icg * t.dtype().size();
    let padded = (icg + ic_pad) * t.dtype().size();
    let mut bytes = Vec::with_capacity(t.as_bytes().len() / row.max(1) * padded);
    for r in t.as_bytes().chunks_exact(row) {
        bytes.extend_from_slice(r);
        bytes.resize(bytes.len() + padded - row, 0);
    }
    shape.push(icg + ic_pad);
    Tensor::from_bytes(t.dtype(), shape, &bytes)
}

impl ConvGeometry {
    /// Elements of the output, `[batch, oc, oh, ow]`.
    pub fn output_len(&self) -> usize {
        self.batch * self.oc * self.oh * self.ow
    }

    /// Whether tap-major weights serve this convolution: a window of several
    /// taps (with one, both orders agree) over enough input channels per group
    /// for a k-tile to span at most two taps.
    pub fn tap_major_pays(&self) -> bool {
        self.kernel != [1, 1] && self.ic / self.group >= TAP_MAJOR_MIN_CHANNELS
    }

    /// Whether cooperative-matrix tiles may read an NHWC copy of the input
    /// ([`Tiles::nhwc`]): eight channels of one tap are then one 16-byte load,
    /// which needs K in tap-major order (one tap, or tap-major weights) and
    /// input channels per group (with `ic_pad`) in multiples of 8 (so never
    /// depthwise).
    pub fn nhwc_fits(&self) -> bool {
        let icg = self.read_icg();
        icg >= 8
            && icg.is_multiple_of(8)
            && (self.kernel == [1, 1] || self.tap_major)
            && (self.ic_pad == 0 || (self.group == 1 && self.tap_major))
    }

    /// The zero channels that would make a single group's input channels a
    /// multiple of 8 for NHWC tiles (0 for several groups).
    pub fn nhwc_pad(&self) -> usize {
        match self.group {
            1 => (8 - self.ic % 8) % 8,
            _ => 0,
        }
    }

    /// Input channels per group the product reads (with `ic_pad`).
    pub fn read_icg(&self) -> usize {
        self.ic / self.group + self.ic_pad
    }

    /// Bytes of the f16 NHWC copy of the input that `tiles` read (0: none).
    pub fn nhwc_bytes(&self, tiles: Tiles) -> u64 {
        match tiles.reads_nhwc() {
            true => (self.batch * (self.ic + self.ic_pad) * self.ih * self.iw) as u64 * 2,
            false => 0,
        }
    }

    /// This geometry fitted to the tiles chosen for it: NHWC tiles keep
    /// tap-major weights and padded channels; other tiles read ONNX's order,
    /// which is faster on GPUs (1-9 % on an H100), unless the adapter gains by
    /// tap-major weights (`Capabilities::tap_major_weights`) where they serve
    /// unpadded ([`Self::tap_major_pays`]).
    pub fn fit_to(&mut self, ctx: &GpuContext, tiles: Tiles) {
        if tiles.reads_nhwc() {
            return;
        }
        let kept = ctx.caps.tap_major_weights && self.ic_pad == 0 && self.tap_major_pays();
        self.tap_major &= kept;
        self.ic_pad = 0;
    }

    /// Elements of the input, `[batch, ic, ih, iw]`.
    pub fn input_len(&self) -> usize {
        self.batch * self.ic * self.ih * self.iw
    }

    /// The GEMM's M, N, K per group.
    pub fn gemm_dims(&self) -> (usize, usize, usize) {
        (
            self.oc / self.group,
            self.batch * self.oh * self.ow,
            self.read_icg() * self.kernel[0] * self.kernel[1],
        )
    }
}

/// `METAL_MPS_GPU_NHWC=off` keeps cooperative-matrix tiles on an NHWC copy
/// of the input ([`Tiles::nhwc`]) out of the autotune's candidates (for
/// comparing the two).
pub const NHWC_ENV: &str = "METAL_MPS_GPU_NHWC";

/// Whether a `dtype` convolution may be given NHWC tiles on this adapter:
/// f16, cooperative matrices allowed (`allow_coop`) with wide loads, and
/// [`NHWC_ENV`] not `off`; [`ConvGeometry::nhwc_fits`] decides per layer.
pub fn nhwc_offered(ctx: &GpuContext, dtype: Scalar, allow_coop: bool) -> bool {
    allow_coop
        && dtype == Scalar::F16
        && ctx.caps.coop.is_some_and(|c| c.wide)
        && std::env::var(NHWC_ENV).map_or(true, |v| v != "off")
}

/// Records a convolution: `y = act(conv(x, w) + bias (+ residual))`; `w` is
/// `[OC, IC / group, KH, KW]`, contiguous. `tiles` shapes the implicit GEMM
/// (on split-K tiles two calls, whose partial sums go to `partial`, of
/// [`Tiles::partial_bytes`]; on NHWC tiles first a copy of `x` into `nhwc`, of
/// [`ConvGeometry::nhwc_bytes`]: two distinct buffers, since the product
/// reads the one and writes the other); depthwise convolutions (one input
/// channel per group) ignore it.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    ctx: &GpuContext,
    dtype: Scalar,
    g: &ConvGeometry,
    tiles: Tiles,
    x: Binding,
    w: Binding,
    bias: Option<Binding>,
    residual: Option<Binding>,
    activation: Option<UnaryOp>,
    y: Binding,
    [partial, nhwc]: [Option<Binding>; 2],
    dummy: &Binding,
) -> Result<Vec<Call>> {
    if g.group == 0 || !g.ic.is_multiple_of(g.group) || !g.oc.is_multiple_of(g.group) {
        return Err(Error::Invalid(format!(
            "group {} does not divide channels {} -> {}",
            g.group, g.ic, g.oc
        )));
    }
    let one_tap = g.kernel == [1, 1];
    if g.tap_major && !one_tap && !g.tap_major_pays() && !tiles.reads_nhwc() {
        return Err(Error::Invalid(format!(
            "tap-major weights with {} input channels per group (at least {TAP_MAJOR_MIN_CHANNELS})",
            g.ic / g.group
        )));
    }
    if g.ic_pad > 0 && !(tiles.reads_nhwc() && g.nhwc_fits()) {
        return Err(Error::Invalid(format!(
            "{} padded input channels outside NHWC tiles",
            g.ic_pad
        )));
    }
    if g.ic == g.group {
        return Ok(vec![depthwise(
            ctx, dtype, g, x, w, bias, residual, activation, y, dummy,
        )?]);
    }
    let (m, n, _) = g.gemm_dims();
    // With padded channels the product reads the NHWC copy's channels.
    let params = Params::default()
        .u32(u32_of(g.batch, "batch")?)
        .u32(u32_of(g.ic + g.ic_pad, "channels")?)
        .u32(u32_of(g.ih, "height")?)
        .u32(u32_of(g.iw, "width")?)
        .u32(u32_of(g.oc, "channels")?)
        .u32(u32_of(g.oh, "height")?)
        .u32(u32_of(g.ow, "width")?)
        .u32(u32_of(g.read_icg(), "channels")?)
        .u32(u32_of(m, "channels")?)
        .u32(u32_of(g.pad[0], "pad")?)
        .u32(u32_of(g.pad[1], "pad")?)
        .u32(0)
        .finish();
    let mut calls = Vec::new();
    let (w8, x8) = if tiles.reads_nhwc() {
        let nhwc = nhwc_copy(ctx, dtype, g, tiles, &x, nhwc, &mut calls)?;
        (wide_view(&w), Some(nhwc))
    } else if wide_loads(ctx, tiles) {
        wide_operands(g, &w, &x)
    } else {
        (None, None)
    };
    // Output planes of a multiple of 8 pixels: eight outputs from a multiple
    // of 8 along n (pixels) are contiguous in one channel's plane.
    let out_wide = wide_out(
        ctx,
        tiles,
        (g.oh * g.ow).is_multiple_of(8),
        &y,
        residual.as_ref(),
    );
    let wide = [w8.is_some(), x8.is_some(), out_wide];
    // NHWC: B (the input) is read along k.
    let key = tile_key(
        Kernel::Conv,
        Kernel::ConvCoop,
        dtype,
        tiles,
        true,
        !tiles.reads_nhwc(),
        wide,
    );
    // One tap: both weight orders agree, and the tap-major gather is the cheaper.
    let key = with_window(key, g, bias.is_some(), residual.is_some(), activation)?
        .with("TAP_MAJOR", Const::Bool(g.tap_major || one_tap))
        .with("NHWC", Const::Bool(tiles.reads_nhwc()));
    let (bm, bn) = tiles.block();
    let groups = [
        u32_of(n.div_ceil(bn).max(1), "tiles")?,
        u32_of(m.div_ceil(bm).max(1), "tiles")?,
        u32_of(g.group * tiles.splits() as usize, "groups")?,
    ];
    if groups.iter().any(|&v| v > super::MAX_GROUPS) {
        return Err(Error::Unsupported(format!(
            "a convolution with grid {groups:?} on the GPU"
        )));
    }
    let mut bindings = vec![
        w,
        x,
        bias.clone().unwrap_or_else(|| dummy.clone()),
        residual.clone().unwrap_or_else(|| dummy.clone()),
        y.clone(),
    ];
    let r8 = residual.as_ref().and_then(wide_view);
    bindings.extend(tail_bindings(
        tiles,
        [w8, x8, r8],
        &y,
        partial.as_ref(),
        dummy,
    )?);
    calls.push(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings,
        groups,
    });
    if let Some(partial) = partial.filter(|_| tiles.splits() > 1) {
        // The bias is C with one value per output channel (row).
        let e = SplitEpilogue {
            len: g.output_len(),
            inner: g.oh * g.ow,
            rows: g.oc,
            alpha: 1.0,
            beta: 1.0,
            c: bias.map(|b| (b, [1, 0])),
            residual,
            activation,
        };
        calls.push(split_sum(ctx, dtype, tiles, e, partial, y, dummy)?);
    }
    Ok(calls)
}

/// Records the copy of `x` in NHWC order into `into` for NHWC tiles;
/// returns the copy's eight-f16 view.
fn nhwc_copy(
    ctx: &GpuContext,
    dtype: Scalar,
    g: &ConvGeometry,
    tiles: Tiles,
    x: &Binding,
    into: Option<Binding>,
    calls: &mut Vec<Call>,
) -> Result<Binding> {
    if !g.nhwc_fits() || dtype != Scalar::F16 || !wide_loads(ctx, tiles) {
        return Err(Error::Invalid(format!(
            "NHWC tiles for a {dtype:?} convolution with {} input channels per group, \
             kernel {:?} (tap-major weights: {}), wide loads {}",
            g.ic / g.group,
            g.kernel,
            g.tap_major,
            wide_loads(ctx, tiles),
        )));
    }
    let bytes = g.nhwc_bytes(tiles);
    let into = into
        .filter(|s| s.size >= bytes)
        .ok_or_else(|| Error::Invalid("NHWC tiles without room for the input's copy".into()))?;
    let nhwc = Binding {
        size: bytes,
        ..into
    };
    let nhwc = wide_view(&nhwc).ok_or_else(|| {
        Error::Invalid("the NHWC copy of the input is not 16-byte aligned".into())
    })?;
    calls.push(to_nhwc(
        ctx,
        [g.batch, g.ic, g.ic + g.ic_pad, g.ih * g.iw],
        x.clone(),
        nhwc.clone(),
    )?);
    Ok(nhwc)
}

/// Records the copy of the f16 tensor `x` of `[n, c_in, hw]` to `y` as `[n,
/// hw, c]`, channels `c_in..c` zero (`c` a multiple of 8, at least `c_in`;
/// `to_nhwc.wgsl`); `y` starts 16-byte aligned.
pub fn to_nhwc(
    ctx: &GpuContext,
    [n, c_in, c, hw]: [usize; 4],
    x: Binding,
    y: Binding,
) -> Result<Call> {
    if !c.is_multiple_of(8) || c < c_in || !y.offset.is_multiple_of(16) {
        return Err(Error::Invalid(format!(
            "an NHWC copy of {c_in} channels as {c} to offset {}",
            y.offset
        )));
    }
    // The kernel indexes elements in u32 (x's are fewer: c_in <= c).
    let vectors = u32_of(n * c * hw, "tensor")? / 8;
    let params = Params::default()
        .u32(vectors)
        .u32(u32_of(hw, "plane")?)
        .u32(u32_of(c / 8, "channels")?)
        .u32(u32_of(c_in, "channels")?)
        .finish();
    let key = PipelineKey::new(Kernel::ToNhwc, Variant::of(Scalar::F16), "main");
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups: grid(u64::from(vectors))?,
    })
}

/// The wide views of `conv_io.wgsl`'s `a_wide` (weight rows, when K is a
/// multiple of 8) and `b_wide` (the input's pixels, for a 1x1 convolution
/// with unit strides and no padding over planes of a multiple of 8 pixels).
fn wide_operands(g: &ConvGeometry, w: &Binding, x: &Binding) -> (Option<Binding>, Option<Binding>) {
    let (_, _, k) = g.gemm_dims();
    let pointwise =
        g.kernel == [1, 1] && g.stride == [1, 1] && g.pad == [0, 0] && (g.oh, g.ow) == (g.ih, g.iw);
    let x_ok = pointwise && (g.ih * g.iw).is_multiple_of(8);
    (
        k.is_multiple_of(8).then(|| wide_view(w)).flatten(),
        x_ok.then(|| wide_view(x)).flatten(),
    )
}

/// The window, epilogue and activation constants both convolution kernels take.
fn with_window(
    key: PipelineKey,
    g: &ConvGeometry,
    has_bias: bool,
    has_res: bool,
    activation: Option<UnaryOp>,
) -> Result<PipelineKey> {
    let key = key
        .with("KH", Const::U32(u32_of(g.kernel[0], "kernel")?))
        .with("KW", Const::U32(u32_of(g.kernel[1], "kernel")?))
        .with("SH", Const::U32(u32_of(g.stride[0], "stride")?))
        .with("SW", Const::U32(u32_of(g.stride[1], "stride")?))
        .with("DH", Const::U32(u32_of(g.dilation[0], "dilation")?))
        .with("DW", Const::U32(u32_of(g.dilation[1], "dilation")?))
        .with("HAS_BIAS", Const::Bool(has_bias))
        .with("HAS_RES", Const::Bool(has_res));
    Ok(with_activation(key, activation))
}

/// Outputs along a row one invocation of `depthwise.wgsl` computes (its `OUTS`).
const DEPTHWISE_OUTS: usize = 4;

/// Records a convolution with one input channel per group (`depthwise.wgsl`).
#[allow(clippy::too_many_arguments)]
fn depthwise(
    ctx: &GpuContext,
    dtype: Scalar,
    g: &ConvGeometry,
    x: Binding,
    w: Binding,
    bias: Option<Binding>,
    residual: Option<Binding>,
    activation: Option<UnaryOp>,
    y: Binding,
    dummy: &Binding,
) -> Result<Call> {
    let rows = g.batch * g.oc * g.oh;
    let row_groups = g.ow.div_ceil(DEPTHWISE_OUTS);
    let params = Params::default()
        .u32(u32_of(rows, "output rows")?)
        .u32(u32_of(g.ic, "channels")?)
        .u32(u32_of(g.ih, "height")?)
        .u32(u32_of(g.iw, "width")?)
        .u32(u32_of(g.oc, "channels")?)
        .u32(u32_of(g.oh, "height")?)
        .u32(u32_of(g.ow, "width")?)
        .u32(u32_of(g.oc / g.group, "channels")?)
        .u32(u32_of(g.pad[0], "pad")?)
        .u32(u32_of(g.pad[1], "pad")?)
        .u32(u32_of(row_groups, "width")?)
        .u32(0)
        .finish();
    let key = PipelineKey::new(Kernel::Depthwise, Variant::of(dtype), "main");
    let key = with_window(key, g, bias.is_some(), residual.is_some(), activation)?;
    let invocations = u32_of(rows * row_groups, "invocations")?;
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![
            w,
            x,
            bias.unwrap_or_else(|| dummy.clone()),
            residual.unwrap_or_else(|| dummy.clone()),
            y,
        ],
        groups: grid(u64::from(invocations))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stem() -> ConvGeometry {
        ConvGeometry {
            batch: 2,
            ic: 3,
            ih: 16,
            iw: 16,
            oc: 64,
            oh: 8,
            ow: 8,
            group: 1,
            kernel: [7, 7],
            stride: [2, 2],
            dilation: [1, 1],
            pad: [3, 3],
            tap_major: false,
            ic_pad: 0,
        }
    }

    #[test]
    fn tap_major_weights_with_zero_channels() {
        let (oc, ic, kh, kw, pad) = (2, 3, 2, 3, 5);
        let w: Vec<f32> = (0..oc * ic * kh * kw).map(|i| i as f32 + 1.0).collect();
        let t = Tensor::from_slice(vec![oc, ic, kh, kw], &w).unwrap();
        let got = tap_major_weights(&t, pad).unwrap();
        assert_eq!(got.shape(), [oc, kh, kw, ic + pad]);
        let got = got.to_vec::<f32>().unwrap();
        for (o, y, x, c) in (0..oc).flat_map(|o| {
            (0..kh).flat_map(move |y| {
                (0..kw).flat_map(move |x| (0..ic + pad).map(move |c| (o, y, x, c)))
            })
        }) {
            let want = if c < ic {
                w[((o * ic + c) * kh + y) * kw + x]
            } else {
                0.0
            };
            assert_eq!(
                got[((o * kh + y) * kw + x) * (ic + pad) + c],
                want,
                "{o} {y} {x} {c}"
            );
        }
        // Without padding: the plain reorder.
        let plain = tap_major_weights(&t, 0).unwrap();
        assert_eq!(plain.shape(), [oc, kh, kw, ic]);
    }

    #[test]
    fn padded_channels_make_a_stem_fit_nhwc_tiles() {
        let g = stem();
        assert_eq!(g.nhwc_pad(), 5);
        assert!(!g.nhwc_fits());
        let padded = ConvGeometry {
            tap_major: true,
            ic_pad: g.nhwc_pad(),
            ..g.clone()
        };
        assert!(padded.nhwc_fits());
        assert_eq!(padded.read_icg(), 8);
        assert_eq!(padded.gemm_dims(), (64, 2 * 8 * 8, 8 * 49));
        let tiles = Tiles::coop(16).nhwc();
        assert_eq!(padded.nhwc_bytes(tiles), 2 * 8 * 16 * 16 * 2);
        assert_eq!(padded.nhwc_bytes(Tiles::coop(16)), 0);
        // Padding needs tap-major weights and one group.
        assert!(!ConvGeometry {
            tap_major: false,
            ..padded.clone()
        }
        .nhwc_fits());
        let grouped = ConvGeometry {
            ic: 6,
            group: 2,
            ..g
        };
        assert_eq!(grouped.nhwc_pad(), 0);
    }
}
