//! GPU operations of a plan and their kernel calls.
//!
//! A [`GpuOp`] is one kernel launch (or a few, for Concat) computing one or
//! more fused graph nodes; it names values, not buffers. [`GpuOp::calls`]
//! binds them to the buffers of one execution instance.

use crate::ops::attention::Attention;
use crate::ops::conv::ConvGeometry;
use crate::ops::copy::{GatherShape, Region};
use crate::ops::elementwise::Step;
use crate::ops::matmul::{Gemm, Tiles};
use crate::ops::pool::PoolGeometry;
use crate::ops::{self, Binding, Call};
use crate::pipeline_cache::Scalar;
use crate::GpuContext;
use metal_mps_ir::{ReduceOp, Result, UnaryOp, ValueId};

/// One kernel launch of a plan.
#[derive(Clone, Debug)]
pub enum GpuOp {
    /// Fused elementwise chain; `operands[0]` starts it.
    Chain {
        out: ValueId,
        out_shape: Vec<usize>,
        operands: Vec<(ValueId, Vec<usize>)>,
        steps: Vec<Step>,
        dtype: Scalar,
    },
    /// Convolution with fused bias, residual and activation.
    Conv {
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        residual: Option<ValueId>,
        act: Option<UnaryOp>,
        out: ValueId,
        geometry: ConvGeometry,
        dtype: Scalar,
        tiles: Tiles,
        /// The f32 partial sums of split-K tiles (a plan value of its own).
        partial: Option<ValueId>,
        /// The NHWC copy of the input that NHWC tiles read (a plan value of
        /// its own, [`ConvGeometry::nhwc_bytes`]).
        nhwc: Option<ValueId>,
    },
    /// MatMul or Gemm; `gemm.c`/`gemm.residual` are bound from `c`/`residual`.
    Gemm {
        a: ValueId,
        b: ValueId,
        c: Option<(ValueId, [usize; 2])>,
        residual: Option<ValueId>,
        out: ValueId,
        gemm: Gemm,
        dtype: Scalar,
        tiles: Tiles,
        /// The f32 partial sums of split-K tiles (a plan value of its own).
        partial: Option<ValueId>,
    },
    Pool {
        x: ValueId,
        out: ValueId,
        geometry: PoolGeometry,
        dtype: Scalar,
    },
    Reduce {
        x: ValueId,
        out: ValueId,
        op: ReduceOp,
        shape: Vec<usize>,
        axes: Vec<usize>,
        dtype: Scalar,
    },
    Softmax {
        x: ValueId,
        out: ValueId,
        outer: usize,
        len: usize,
        inner: usize,
        dtype: Scalar,
    },
    /// LayerNormalization or RMSNormalization over rows of `cols`.
    LayerNorm {
        x: ValueId,
        scale: ValueId,
        bias: Option<ValueId>,
        out: ValueId,
        rows: usize,
        cols: usize,
        eps: f32,
        rms: bool,
        dtype: Scalar,
    },
    /// Strided copies of pieces into `out` (Transpose, Concat, Split's parts).
    Copy {
        out: ValueId,
        pieces: Vec<(ValueId, Region)>,
        elem_bytes: usize,
    },
    /// Gather whose indices (i32, or i64 when `index64`) are read on the device.
    Gather {
        x: ValueId,
        indices: ValueId,
        out: ValueId,
        shape: GatherShape,
        elem_bytes: usize,
        index64: bool,
    },
    /// Where: `a` where `cond` (a boolean), else `b`, all broadcast to `out_shape`.
    Where {
        cond: ValueId,
        a: ValueId,
        b: ValueId,
        out: ValueId,
        shapes: [Vec<usize>; 3],
        out_shape: Vec<usize>,
        elem_bytes: usize,
    },
    /// A gather separable by axis; `table` holds each axis's input indices
    /// from `offsets[axis]`.
    Pick {
        x: ValueId,
        table: ValueId,
        out: ValueId,
        in_shape: Vec<usize>,
        out_shape: Vec<usize>,
        offsets: Vec<usize>,
        elem_bytes: usize,
    },
    /// Constant-mode Pad of 4-byte elements (`value`: the fill's bits).
    Pad {
        x: ValueId,
        out: ValueId,
        in_shape: Vec<usize>,
        out_shape: Vec<usize>,
        begin: Vec<i64>,
        value: u32,
    },
    /// Conversion; `to_bool`: to a boolean, whether `x` is not zero.
    Cast {
        x: ValueId,
        out: ValueId,
        from: Scalar,
        to: Scalar,
        to_bool: bool,
        n: usize,
    },
    /// Fused attention (the Attention operator, or the MatMul, scale, mask,
    /// Softmax and MatMul that exporters write for it).
    Attention {
        q: ValueId,
        k: ValueId,
        v: ValueId,
        mask: Option<ValueId>,
        out: ValueId,
        attention: Attention,
        dtype: Scalar,
    },
    BatchNorm {
        x: ValueId,
        params: [ValueId; 4],
        out: ValueId,
        n: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        dtype: Scalar,
    },
}

impl GpuOp {
    /// Values read.
    pub fn inputs(&self) -> Vec<ValueId> {
        match self {
            GpuOp::Chain { operands, .. } => operands.iter().map(|o| o.0).collect(),
            GpuOp::Conv {
                x,
                w,
                bias,
                residual,
                ..
            } => [Some(*x), Some(*w), *bias, *residual]
                .into_iter()
                .flatten()
                .collect(),
            GpuOp::Gemm {
                a, b, c, residual, ..
            } => [Some(*a), Some(*b), c.map(|c| c.0), *residual]
                .into_iter()
                .flatten()
                .collect(),
            GpuOp::LayerNorm { x, scale, bias, .. } => [Some(*x), Some(*scale), *bias]
                .into_iter()
                .flatten()
                .collect(),
            GpuOp::Pool { x, .. }
            | GpuOp::Pad { x, .. }
            | GpuOp::Reduce { x, .. }
            | GpuOp::Softmax { x, .. }
            | GpuOp::Cast { x, .. } => vec![*x],
            GpuOp::Copy { pieces, .. } => pieces.iter().map(|p| p.0).collect(),
            GpuOp::Gather { x, indices, .. } => vec![*x, *indices],
            GpuOp::Where { cond, a, b, .. } => vec![*cond, *a, *b],
            GpuOp::Pick { x, table, .. } => vec![*x, *table],
            GpuOp::BatchNorm { x, params, .. } => {
                std::iter::once(*x).chain(params.iter().copied()).collect()
            }
            GpuOp::Attention { q, k, v, mask, .. } => [Some(*q), Some(*k), Some(*v), *mask]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// Values written and read by this op alone (its partial sums, its NHWC copy).
    pub fn temporaries(&self) -> impl Iterator<Item = ValueId> {
        let (partial, nhwc) = match self {
            GpuOp::Conv { partial, nhwc, .. } => (*partial, *nhwc),
            GpuOp::Gemm { partial, .. } => (*partial, None),
            _ => (None, None),
        };
        partial.into_iter().chain(nhwc)
    }

    /// Bytes of the split-K partial sums its tiles need (0: none).
    pub fn partial_bytes(&self) -> u64 {
        match self {
            GpuOp::Conv {
                geometry, tiles, ..
            } => tiles.partial_bytes(geometry.output_len()),
            GpuOp::Gemm { gemm, tiles, .. } => tiles.partial_bytes(gemm.output_len()),
            _ => 0,
        }
    }

    /// Bytes of the NHWC copy of the input its tiles read (0: none).
    pub fn nhwc_bytes(&self) -> u64 {
        match self {
            GpuOp::Conv {
                geometry, tiles, ..
            } => geometry.nhwc_bytes(*tiles),
            _ => 0,
        }
    }

    /// The value written.
    pub fn output(&self) -> ValueId {
        match self {
            GpuOp::Chain { out, .. }
            | GpuOp::Conv { out, .. }
            | GpuOp::Gemm { out, .. }
            | GpuOp::Pool { out, .. }
            | GpuOp::Reduce { out, .. }
            | GpuOp::Softmax { out, .. }
            | GpuOp::LayerNorm { out, .. }
            | GpuOp::Pad { out, .. }
            | GpuOp::Gather { out, .. }
            | GpuOp::Where { out, .. }
            | GpuOp::Pick { out, .. }
            | GpuOp::Copy { out, .. }
            | GpuOp::Cast { out, .. }
            | GpuOp::Attention { out, .. }
            | GpuOp::BatchNorm { out, .. } => *out,
        }
    }

    /// The calls of this op on the buffers `bind` gives each value.
    pub fn calls(
        &self,
        ctx: &GpuContext,
        bind: &dyn Fn(ValueId) -> Binding,
        dummy: &Binding,
    ) -> Result<Vec<Call>> {
        Ok(match self {
            GpuOp::Chain {
                out,
                out_shape,
                operands,
                steps,
                dtype,
            } => {
                let ops_b: Vec<(Binding, &[usize])> = operands
                    .iter()
                    .map(|(v, s)| (bind(*v), s.as_slice()))
                    .collect();
                vec![ops::elementwise::elementwise(
                    ctx,
                    *dtype,
                    out_shape,
                    &ops_b,
                    steps,
                    bind(*out),
                    dummy,
                )?]
            }
            GpuOp::Conv {
                x,
                w,
                bias,
                residual,
                act,
                out,
                geometry,
                dtype,
                tiles,
                partial,
                nhwc,
            } => ops::conv::conv(
                ctx,
                *dtype,
                geometry,
                *tiles,
                bind(*x),
                bind(*w),
                bias.map(bind),
                residual.map(bind),
                *act,
                bind(*out),
                [partial.map(bind), nhwc.map(bind)],
                dummy,
            )?,
            GpuOp::Gemm {
                a,
                b,
                c,
                residual,
                out,
                gemm,
                dtype,
                tiles,
                partial,
            } => {
                let mut g = gemm.clone();
                g.c = c.map(|(v, s)| (bind(v), s));
                g.residual = residual.map(bind);
                ops::matmul::matmul(
                    ctx,
                    *dtype,
                    &g,
                    *tiles,
                    bind(*a),
                    bind(*b),
                    bind(*out),
                    partial.map(bind),
                    dummy,
                )?
            }
            GpuOp::Gather {
                x,
                indices,
                out,
                shape,
                elem_bytes,
                index64,
            } => vec![ops::copy::gather(
                ctx,
                *elem_bytes,
                *shape,
                *index64,
                bind(*x),
                bind(*indices),
                bind(*out),
            )?],
            GpuOp::Where {
                cond,
                a,
                b,
                out,
                shapes,
                out_shape,
                elem_bytes,
            } => vec![ops::select::where_select(
                ctx,
                *elem_bytes,
                out_shape,
                [&shapes[0], &shapes[1], &shapes[2]],
                [bind(*cond), bind(*a), bind(*b)],
                bind(*out),
            )?],
            GpuOp::Pick {
                x,
                table,
                out,
                in_shape,
                out_shape,
                offsets,
                elem_bytes,
            } => vec![ops::copy::pick(
                ctx,
                *elem_bytes,
                in_shape,
                out_shape,
                offsets,
                [bind(*x), bind(*table), bind(*out)],
            )?],
            GpuOp::Pad {
                x,
                out,
                in_shape,
                out_shape,
                begin,
                value,
            } => vec![ops::copy::pad(
                ctx,
                in_shape,
                out_shape,
                begin,
                *value,
                bind(*x),
                bind(*out),
            )?],
            GpuOp::LayerNorm {
                x,
                scale,
                bias,
                out,
                rows,
                cols,
                eps,
                rms,
                dtype,
            } => vec![ops::layernorm::layer_norm(
                ctx,
                *dtype,
                *rows,
                *cols,
                *eps,
                *rms,
                bind(*x),
                bind(*scale),
                bias.map(bind),
                bind(*out),
                dummy,
            )?],
            GpuOp::Pool {
                x,
                out,
                geometry,
                dtype,
            } => vec![ops::pool::pool(
                ctx,
                *dtype,
                geometry,
                bind(*x),
                bind(*out),
            )?],
            GpuOp::Reduce {
                x,
                out,
                op,
                shape,
                axes,
                dtype,
            } => {
                vec![ops::reduce::reduce(
                    ctx,
                    *dtype,
                    *op,
                    shape,
                    axes,
                    bind(*x),
                    bind(*out),
                )?]
            }
            GpuOp::Softmax {
                x,
                out,
                outer,
                len,
                inner,
                dtype,
            } => {
                vec![ops::softmax::softmax(
                    ctx,
                    *dtype,
                    *outer,
                    *len,
                    *inner,
                    bind(*x),
                    bind(*out),
                )?]
            }
            GpuOp::Copy {
                out,
                pieces,
                elem_bytes,
            } => pieces
                .iter()
                .filter(|(_, r)| r.shape.iter().product::<usize>() > 0)
                .map(|(v, r)| ops::copy::copy(ctx, *elem_bytes, r, bind(*v), bind(*out)))
                .collect::<Result<_>>()?,
            GpuOp::Cast {
                x,
                out,
                from,
                to,
                to_bool,
                n,
            } => vec![ops::cast::cast(
                ctx,
                *from,
                *to,
                *to_bool,
                *n,
                bind(*x),
                bind(*out),
            )?],
            GpuOp::Attention {
                q,
                k,
                v,
                mask,
                out,
                attention,
                dtype,
            } => vec![ops::attention::attention(
                ctx,
                *dtype,
                attention,
                bind(*q),
                bind(*k),
                bind(*v),
                mask.map(bind),
                bind(*out),
                dummy,
            )?],
            GpuOp::BatchNorm {
                x,
                params,
                out,
                n,
                channels,
                inner,
                eps,
                dtype,
            } => vec![ops::batchnorm::batchnorm(
                ctx,
                *dtype,
                *n,
                *channels,
                *inner,
                *eps,
                bind(*x),
                params.map(bind),
                bind(*out),
            )?],
        })
    }
}
