//! Pad in every mode, and CenterCropPad.
//!
//! Pad's constant mode is the built-in `Op::Pad` (the engines' fast path);
//! the reflect, edge and wrap modes are the operator here. Pads are the
//! `paddings` attribute at opset 1, `pads` at opset 2, an input from opset 11
//! (with an `axes` input from opset 18); negative pads crop first.

use super::remap::{axis_map, remap, AxisMap};
use crate::support::{arg, axis, const_ints, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::{expand_pads, Known};
use metal_mps_ir::{
    invalid, strides, unsupported, DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result,
    Shape, Tensor,
};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug)]
struct Pad {
    mode: Mode,
    /// Before opset 11: the pads attribute.
    pads: Option<Vec<i64>>,
}

pub fn build_pad(cx: &BuildCx) -> Result<Op> {
    let mode = cx.attrs.str_or("mode", "constant")?;
    let pads = if cx.opset < 11 {
        let name = if cx.opset < 2 { "paddings" } else { "pads" };
        Some(cx.attrs.ints(name)?.ok_or_else(|| {
            Error::InvalidModel(format!(
                "Pad needs the '{name}' attribute (opset {})",
                cx.opset
            ))
        })?)
    } else {
        if cx.num_inputs < 2 {
            return invalid!("Pad needs the pads input (opset 11+)");
        }
        None
    };
    let mode = match mode.as_str() {
        "constant" => {
            let value = if cx.opset < 11 {
                cx.attrs.float("value", 0.0)?
            } else {
                0.0
            };
            return Ok(Op::Pad { pads, value });
        }
        "reflect" => Mode::Reflect,
        "edge" => Mode::Edge,
        "wrap" if cx.opset >= 19 => Mode::Wrap,
        m => return unsupported!("Pad mode '{m}' at opset {}", cx.opset),
    };
    Ok(Op::Dyn(DynOp::new(Pad { mode, pads })))
}

/// Output size of an axis of `dim` padded by `begin` and `end` (negative: crop).
fn padded(dim: usize, begin: i64, end: i64) -> Option<usize> {
    let v = (dim as i128) + begin as i128 + end as i128;
    usize::try_from(v).ok()
}

impl Pad {
    fn full_pads(
        &self,
        pads: Option<Vec<i64>>,
        axes: Option<Vec<i64>>,
        rank: usize,
    ) -> Result<Vec<i64>> {
        let p = match (&self.pads, pads) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => match axes {
                Some(a) => expand_pads(&p, &a, rank)?,
                None => p,
            },
            (None, None) => return invalid!("Pad needs the pads input"),
        };
        if p.len() != 2 * rank {
            return invalid!("Pad: {} pads for an input of rank {rank}", p.len());
        }
        Ok(p)
    }
}

/// The index read along an axis of `n` (after cropping) for padded position `j`.
fn source(mode: Mode, j: i64, n: i64) -> i64 {
    match mode {
        Mode::Edge => j.clamp(0, n - 1),
        Mode::Wrap => j.rem_euclid(n),
        Mode::Reflect => {
            if n == 1 {
                return 0;
            }
            let p = 2 * (n - 1);
            let k = j.rem_euclid(p);
            if k < n {
                k
            } else {
                p - k
            }
        }
    }
}

impl Operator for Pad {
    fn name(&self) -> &str {
        "Pad"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if let Some(k) = known_opt(ins, 1) {
            if !matches!(k.dtype, DType::I64 | DType::I32) {
                return invalid!("Pad: pads must be INT64, got {}", k.dtype);
            }
        }
        let Some(xs) = x.shape else {
            return Ok(vec![(x.dtype, None)]);
        };
        let pads = if self.pads.is_some() {
            Some(self.full_pads(None, None, xs.len())?)
        } else {
            let p = const_ints(known_opt(ins, 1));
            let has_axes = known_opt(ins, 3).is_some();
            let a = const_ints(known_opt(ins, 3));
            match (p, has_axes, a) {
                (Some(p), false, _) => Some(self.full_pads(Some(p), None, xs.len())?),
                (Some(p), true, Some(a)) => Some(self.full_pads(Some(p), Some(a), xs.len())?),
                _ => None,
            }
        };
        let rank = xs.len();
        let shape: Shape = match pads {
            Some(p) => xs
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(n) => padded(*n, p[i], p[i + rank])
                        .map(Dim::Fixed)
                        .ok_or_else(|| Error::Invalid(format!("Pad makes axis {i} negative"))),
                    d if p[i] == 0 && p[i + rank] == 0 => Ok(d.clone()),
                    _ => Ok(Dim::Unknown),
                })
                .collect::<Result<_>>()?,
            None => vec![Dim::Unknown; rank],
        };
        Ok(vec![(x.dtype, Some(shape))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let rank = x.rank();
        let pads = self.full_pads(
            opt(inputs, 1).map(|t| t.to_i64_vec()).transpose()?,
            opt(inputs, 3).map(|t| t.to_i64_vec()).transpose()?,
            rank,
        )?;
        let xst = strides(x.shape());
        // Per axis: first kept index, kept length, pad before, output size.
        let mut plan = Vec::with_capacity(rank);
        for (d, &n) in x.shape().iter().enumerate() {
            let (b, e) = (pads[d], pads[d + rank]);
            let lo = if b < 0 { b.unsigned_abs() } else { 0 };
            let hi = if e < 0 { e.unsigned_abs() } else { 0 };
            let kept = (n as u64)
                .checked_sub(lo.saturating_add(hi))
                .ok_or_else(|| Error::Invalid(format!("Pad crops axis {d} below zero")))?;
            let size = padded(n, b, e)
                .ok_or_else(|| Error::Invalid(format!("Pad makes axis {d} negative")))?;
            if kept == 0 && size > 0 {
                return invalid!("Pad: {:?} mode cannot pad the empty axis {d}", self.mode);
            }
            plan.push((lo as i64, kept as i64, b.max(0), size));
        }
        let shape = plan.iter().map(|p| p.3).collect();
        let mode = self.mode;
        let y = remap("Pad", x, shape, out, || {
            plan.iter()
                .zip(&xst)
                .map(|(&(lo, kept, before, size), &s)| {
                    axis_map(size, |o| {
                        let j = source(mode, o as i64 - before, kept);
                        Some((lo + j) as usize * s)
                    })
                })
                .collect::<Result<Vec<AxisMap>>>()
        })?;
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct CenterCropPad {
    axes: Option<Vec<i64>>,
}

pub fn build_center_crop_pad(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(CenterCropPad {
        axes: cx.attrs.ints("axes")?,
    })))
}

impl CenterCropPad {
    /// The target size of every axis.
    fn target(
        &self,
        rank: usize,
        shape: &[i64],
        dims: &[Option<usize>],
    ) -> Result<Vec<Option<usize>>> {
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a
                .iter()
                .map(|&v| axis("CenterCropPad", v, rank))
                .collect::<Result<_>>()?,
            None => (0..rank).collect(),
        };
        if axes.len() != shape.len() {
            return invalid!(
                "CenterCropPad: shape has {} values for {} axes",
                shape.len(),
                axes.len()
            );
        }
        let mut out = dims.to_vec();
        for (&a, &s) in axes.iter().zip(shape) {
            out[a] = Some(
                usize::try_from(s)
                    .map_err(|_| Error::Invalid(format!("CenterCropPad: negative size {s}")))?,
            );
        }
        Ok(out)
    }
}

impl Operator for CenterCropPad {
    fn name(&self) -> &str {
        "CenterCropPad"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let s = known(ins, 1)?;
        if !matches!(s.dtype, DType::I64 | DType::I32) {
            return invalid!(
                "CenterCropPad: shape must be INT32 or INT64, got {}",
                s.dtype
            );
        }
        let shape = match (x.shape, const_ints(Some(s))) {
            (Some(xs), Some(sv)) => {
                let dims: Vec<Option<usize>> = vec![None; xs.len()];
                let t = self.target(xs.len(), &sv, &dims)?;
                Some(
                    t.iter()
                        .zip(xs)
                        .map(|(t, d)| t.map(Dim::Fixed).unwrap_or_else(|| d.clone()))
                        .collect(),
                )
            }
            (Some(xs), None) => Some(vec![Dim::Unknown; xs.len()]),
            (None, _) => None,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let sv = arg(inputs, 1)?.to_i64_vec()?;
        let dims: Vec<Option<usize>> = x.shape().iter().map(|&d| Some(d)).collect();
        let shape: Vec<usize> = self
            .target(x.rank(), &sv, &dims)?
            .into_iter()
            .map(|d| d.unwrap_or(0))
            .collect();
        let xst = strides(x.shape());
        let dims = shape.clone();
        let y = remap("CenterCropPad", x, shape, out, || {
            x.shape()
                .iter()
                .zip(&dims)
                .zip(&xst)
                .map(|((&n, &t), &s)| {
                    if t <= n {
                        // Crop: start at floor((n - t) / 2).
                        let start = (n - t) / 2;
                        axis_map(t, |i| Some((start + i) * s))
                    } else {
                        // Pad: the input starts at floor((t - n) / 2).
                        let p = (t - n) / 2;
                        axis_map(t, |o| (o >= p && o < p + n).then(|| (o - p) * s))
                    }
                })
                .collect::<Result<Vec<AxisMap>>>()
        })?;
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
