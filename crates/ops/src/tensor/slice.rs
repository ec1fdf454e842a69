//! Slice: starts, ends and axes as attributes before opset 10; starts, ends,
//! axes and steps as inputs from opset 10. Negative indices count from the
//! end, out-of-range ones clamp, negative steps walk backwards.

use super::remap::{remap, stepped, AxisMap};
use crate::support::{arg, axis, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    invalid, strides, Dim, DynOp, Fact, Op, Operator, Out, Result, Shape, StridedView, Tensor,
};
use std::any::Any;

/// Starts, ends, axes (optional) and steps (optional) as given.
type Params = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

#[derive(Debug)]
struct Slice {
    /// Opset < 10: starts, ends and axes from the attributes (no steps).
    attrs: Option<Params>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let attrs = if cx.opset < 10 {
        let get = |n: &str| {
            cx.attrs.ints(n)?.ok_or_else(|| {
                metal_mps_ir::Error::InvalidModel(format!("Slice needs the '{n}' attribute"))
            })
        };
        Some((get("starts")?, get("ends")?, cx.attrs.ints("axes")?, None))
    } else {
        if cx.num_inputs < 3 {
            return invalid!("Slice needs the starts and ends inputs (opset 10+)");
        }
        None
    };
    Ok(Op::Dyn(DynOp::new(Slice { attrs })))
}

/// One sliced axis: the axis, its start, end and step as given.
type Spec = (usize, i64, i64, i64);

/// Resolves axes (default `0..len`), checks lengths, steps and repeats.
fn specs(
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
    rank: usize,
) -> Result<Vec<Spec>> {
    let n = starts.len();
    if ends.len() != n {
        return invalid!("Slice: {n} starts but {} ends", ends.len());
    }
    let axes: Vec<usize> = match axes {
        Some(a) => {
            if a.len() != n {
                return invalid!("Slice: {n} starts but {} axes", a.len());
            }
            a.iter()
                .map(|&v| axis("Slice", v, rank))
                .collect::<Result<_>>()?
        }
        None => {
            if n > rank {
                return invalid!("Slice: {n} starts for an input of rank {rank}");
            }
            (0..n).collect()
        }
    };
    let steps: Vec<i64> = match steps {
        Some(s) => {
            if s.len() != n {
                return invalid!("Slice: {n} starts but {} steps", s.len());
            }
            s.to_vec()
        }
        None => vec![1; n],
    };
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if steps[i] == 0 {
            return invalid!("Slice: step 0 on axis {}", axes[i]);
        }
        if std::mem::replace(&mut seen[axes[i]], true) {
            return invalid!("Slice: axis {} is repeated", axes[i]);
        }
        out.push((axes[i], starts[i], ends[i], steps[i]));
    }
    Ok(out)
}

/// The first index and element count of `start..end` by `step` on an axis of `dim`.
pub(crate) fn axis_range(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let d = dim as i64;
    let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    if step > 0 {
        let s = wrap(start).clamp(0, d);
        let e = wrap(end).clamp(0, d);
        if e <= s {
            return (s as usize, 0);
        }
        (s as usize, ((e - s - 1) as u64 / step as u64 + 1) as usize)
    } else {
        if d == 0 {
            return (0, 0);
        }
        let s = wrap(start).clamp(0, d - 1);
        let e = wrap(end).clamp(-1, d - 1);
        if s <= e {
            return (s as usize, 0);
        }
        (
            s as usize,
            ((s - e - 1) as u64 / step.unsigned_abs() + 1) as usize,
        )
    }
}

/// Per axis of an input of `x_shape`: first index, step and count.
fn ranges(x_shape: &[usize], (s, e, a, st): Params) -> Result<Vec<(usize, i64, usize)>> {
    let specs = specs(&s, &e, a.as_deref(), st.as_deref(), x_shape.len())?;
    let mut ranges: Vec<(usize, i64, usize)> = x_shape.iter().map(|&d| (0, 1, d)).collect();
    for (ax, start, end, step) in specs {
        let (first, count) = axis_range(x_shape[ax], start, end, step);
        ranges[ax] = (first, step, count);
    }
    Ok(ranges)
}

impl Slice {
    /// Starts, ends, axes and steps from the attributes or the inputs' values.
    fn values(
        &self,
        get: impl Fn(usize) -> Option<Result<Option<Vec<i64>>>>,
    ) -> Option<Result<Params>> {
        if let Some(p) = &self.attrs {
            return Some(Ok(p.clone()));
        }
        let mut vals = Vec::with_capacity(4);
        for i in 1..5 {
            match get(i)? {
                Ok(v) => vals.push(v),
                Err(e) => return Some(Err(e)),
            }
        }
        let mut it = vals.into_iter();
        let (s, e, a, st) = (it.next()?, it.next()?, it.next()?, it.next()?);
        Some(match (s, e) {
            (Some(s), Some(e)) => Ok((s, e, a, st)),
            _ => invalid!("Slice needs the starts and ends inputs"),
        })
    }
}

impl Operator for Slice {
    fn name(&self) -> &str {
        "Slice"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        for i in 1..5 {
            if let Some(k) = known_opt(ins, i) {
                if !matches!(k.dtype, metal_mps_ir::DType::I32 | metal_mps_ir::DType::I64) {
                    return invalid!("Slice: input {i} must be INT32 or INT64, got {}", k.dtype);
                }
            }
        }
        let Some(xs) = x.shape else {
            return Ok(vec![(x.dtype, None)]);
        };
        // `None` from `get`: an input whose values are not known yet.
        let get = |i: usize| -> Option<Result<Option<Vec<i64>>>> {
            match known_opt(ins, i) {
                None => Some(Ok(None)),
                Some(k) => k.constant.map(|t| t.to_i64_vec().map(Some)),
            }
        };
        let Some(vals) = self.values(get) else {
            // Values unknown: the rank stays, the sliced axes are unknown.
            let axes = match known_opt(ins, 3) {
                Some(k) => k.constant.map(|t| t.to_i64_vec()).transpose()?,
                None => None,
            };
            let shape: Shape = match axes {
                Some(a) => {
                    let a: Vec<usize> = a
                        .iter()
                        .map(|&v| axis("Slice", v, xs.len()))
                        .collect::<Result<_>>()?;
                    xs.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if a.contains(&i) {
                                Dim::Unknown
                            } else {
                                d.clone()
                            }
                        })
                        .collect()
                }
                None => vec![Dim::Unknown; xs.len()],
            };
            return Ok(vec![(x.dtype, Some(shape))]);
        };
        let (s, e, a, st) = vals?;
        let specs = specs(&s, &e, a.as_deref(), st.as_deref(), xs.len())?;
        let mut shape = xs.to_vec();
        for (ax, start, end, step) in specs {
            shape[ax] = match &xs[ax] {
                Dim::Fixed(d) => Dim::Fixed(axis_range(*d, start, end, step).1),
                d if start == 0 && step == 1 && end >= i32::MAX as i64 => d.clone(),
                _ => Dim::Unknown,
            };
        }
        Ok(vec![(x.dtype, Some(shape))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let get = |i: usize| -> Option<Result<Option<Vec<i64>>>> {
            Some(opt(inputs, i).map(|t| t.to_i64_vec()).transpose())
        };
        let (s, e, a, st) = self
            .values(get)
            .unwrap_or_else(|| invalid!("Slice needs the starts and ends inputs"))?;
        let ranges = ranges(x.shape(), (s, e, a, st))?;
        let xst = strides(x.shape());
        let shape = ranges.iter().map(|r| r.2).collect();
        let y = remap("Slice", x, shape, out, || {
            ranges
                .iter()
                .zip(&xst)
                .map(|(&(first, step, count), &s)| stepped(first, step, count, s))
                .collect::<Result<Vec<AxisMap>>>()
        })?;
        Ok(vec![y])
    }

    fn strided_view(
        &self,
        x_shape: &[usize],
        constants: &[Option<&Tensor>],
    ) -> Option<StridedView> {
        let get = |i: usize| -> Option<Result<Option<Vec<i64>>>> {
            Some(
                constants
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| t.to_i64_vec())
                    .transpose(),
            )
        };
        let ranges = ranges(x_shape, self.values(get)?.ok()?).ok()?;
        let xst = strides(x_shape);
        let mut offset = 0usize;
        for (&(first, _, count), &s) in ranges.iter().zip(&xst) {
            if count > 0 {
                offset = offset.checked_add(first.checked_mul(s)?)?;
            }
        }
        let strides = ranges
            .iter()
            .zip(&xst)
            .map(|(&(_, step, _), &s)| step.checked_mul(i64::try_from(s).ok()?))
            .collect::<Option<Vec<i64>>>()?;
        Some(StridedView {
            shape: ranges.iter().map(|r| r.2).collect(),
            offset,
            strides,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{axis_range, Slice};
    use metal_mps_ir::{Operator, Out, Tensor};

    /// The strided view reads the elements `eval` returns, for positive and
    /// negative steps, clamped and negative bounds, and a subset of axes.
    #[test]
    fn strided_views_pick_what_eval_picks() {
        let shape = vec![3usize, 4, 5];
        let x = Tensor::from_vec(shape.clone(), (0..60).map(|v| v as f32).collect()).unwrap();
        let t = |v: &[i64]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        let cases: Vec<[Vec<i64>; 4]> = vec![
            [vec![1, 0], vec![3, 5], vec![0, 2], vec![1, 2]],
            [vec![-2], vec![i64::MAX], vec![1], vec![1]],
            [vec![-1, 4], vec![i64::MIN, -10], vec![2, 1], vec![-2, -1]],
            [vec![0, 0, 1], vec![100, 4, 5], vec![0, 1, 2], vec![2, 3, 3]],
        ];
        let op = Slice { attrs: None };
        for [starts, ends, axes, steps] in cases {
            let consts = [t(&starts), t(&ends), t(&axes), t(&steps)];
            let ins = [
                Some(&x),
                Some(&consts[0]),
                Some(&consts[1]),
                Some(&consts[2]),
                Some(&consts[3]),
            ];
            let want = op.eval(&ins, 1, &mut Out::fresh()).unwrap().remove(0);
            let view = op.strided_view(&shape, &ins).unwrap();
            assert_eq!(view.shape, want.shape(), "{starts:?} {ends:?} {steps:?}");
            let xs = x.as_slice::<f32>().unwrap();
            let mut got = Vec::new();
            for i in 0..want.numel() {
                let (mut rem, mut at) = (i, view.offset as i64);
                for d in (0..view.shape.len()).rev() {
                    at += (rem % view.shape[d]) as i64 * view.strides[d];
                    rem /= view.shape[d];
                }
                got.push(xs[at as usize]);
            }
            assert_eq!(
                got,
                want.as_slice::<f32>().unwrap(),
                "{starts:?} {ends:?} {steps:?}"
            );
        }
    }

    #[test]
    fn ranges_follow_numpy() {
        // x[1:3] of 5
        assert_eq!(axis_range(5, 1, 3, 1), (1, 2));
        // x[-2:] of 5 -> 3,4
        assert_eq!(axis_range(5, -2, i64::MAX, 1), (3, 2));
        // x[::-1] of 4 -> 3,2,1,0
        assert_eq!(axis_range(4, -1, i64::MIN, -1), (3, 4));
        // x[10:0:-3] of 5 -> 4,1
        assert_eq!(axis_range(5, 10, 0, -3), (4, 2));
        // x[0:5:2] of 5 -> 0,2,4
        assert_eq!(axis_range(5, 0, 5, 2), (0, 3));
        // empty axis, negative step
        assert_eq!(axis_range(0, -1, i64::MIN, -1).1, 0);
        // step larger than the axis
        assert_eq!(axis_range(3, 0, 3, i64::MAX), (0, 1));
    }
}
