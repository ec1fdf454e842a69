//! Expand (broadcast to a shape) and Tile (repeat along every axis; Tile-1
//! repeats along one axis given as an input).

use super::remap::{axis_map, remap, AxisMap};
use crate::support::{arg, const_ints, known, known_opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    invalid, strides, DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Shape, Tensor,
};
use std::any::Any;

#[derive(Debug)]
struct Expand;

pub fn build_expand(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Expand)))
}

fn check_shape_input(op: &str, k: &Known) -> Result<()> {
    if k.dtype != DType::I64 {
        return invalid!("{op}: the shape input must be INT64, got {}", k.dtype);
    }
    Ok(())
}

/// The broadcast of an input of `xs` and a target `s`, as Expand defines it.
fn expand_dims(xs: &[Dim], s: &[i64]) -> Result<Shape> {
    let rank = xs.len().max(s.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let xd = if i + xs.len() >= rank {
            xs[i + xs.len() - rank].clone()
        } else {
            Dim::Fixed(1)
        };
        let sd = if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        };
        if sd < 0 {
            return invalid!("Expand: negative size {sd} in shape {s:?}");
        }
        let sd = sd as usize;
        out.push(match xd {
            _ if sd == 1 => xd,
            Dim::Fixed(1) => Dim::Fixed(sd),
            Dim::Fixed(n) if n == sd => Dim::Fixed(n),
            Dim::Fixed(n) => {
                return invalid!("Expand: dimension {n} cannot be broadcast to {sd} (shape {s:?})")
            }
            _ => Dim::Fixed(sd),
        });
    }
    Ok(out)
}

impl Operator for Expand {
    fn name(&self) -> &str {
        "Expand"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let s = known(ins, 1)?;
        check_shape_input("Expand", s)?;
        let shape = match (x.shape, const_ints(Some(s))) {
            (Some(xs), Some(sv)) => Some(expand_dims(xs, &sv)?),
            (xs, None) => match (xs, s.shape.and_then(|d| d.first()).and_then(Dim::fixed)) {
                (Some(xs), Some(n)) => Some(metal_mps_ir::unknown_shape(xs.len().max(n))?),
                _ => None,
            },
            (None, Some(_)) => None,
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
        let s = arg(inputs, 1)?.to_i64_vec()?;
        let xd: Vec<Dim> = x.shape().iter().map(|&d| Dim::Fixed(d)).collect();
        let shape: Vec<usize> = expand_dims(&xd, &s)?
            .iter()
            .map(|d| d.fixed().unwrap_or(0))
            .collect();
        let rank = shape.len();
        let lead = rank - x.rank();
        let xst = strides(x.shape());
        let dims = shape.clone();
        let y = remap("Expand", x, shape, out, || {
            dims.iter()
                .enumerate()
                .map(|(i, &n)| {
                    if i < lead || x.shape()[i - lead] == 1 {
                        axis_map(n, |_| Some(0))
                    } else {
                        axis_map(n, |j| Some(j * xst[i - lead]))
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

#[derive(Debug)]
struct Tile {
    /// Tile-1: inputs (input, tiles, axis) rather than (input, repeats).
    legacy: bool,
}

pub fn build_tile(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Tile {
        legacy: cx.opset < 6,
    })))
}

impl Tile {
    /// The repeat count of every axis, from the inputs' values.
    fn repeats(&self, rank: usize, vals: &[Vec<i64>]) -> Result<Vec<usize>> {
        let reps: Vec<i64> = if self.legacy {
            let (tiles, ax) = match vals {
                [t, a] if t.len() == 1 && a.len() == 1 => (t[0], a[0]),
                _ => return invalid!("Tile-1 needs scalar tiles and axis inputs"),
            };
            let ax = crate::support::axis("Tile", ax, rank)?;
            let mut r = vec![1; rank];
            r[ax] = tiles;
            r
        } else {
            let r = vals.first().cloned().unwrap_or_default();
            if r.len() != rank {
                return invalid!("Tile: {} repeats for an input of rank {rank}", r.len());
            }
            r
        };
        reps.iter()
            .map(|&r| {
                usize::try_from(r)
                    .map_err(|_| Error::Invalid(format!("Tile: negative repeat count {r}")))
            })
            .collect()
    }
}

impl Operator for Tile {
    fn name(&self) -> &str {
        "Tile"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let n_params = if self.legacy { 2 } else { 1 };
        let mut vals = Vec::with_capacity(n_params);
        for i in 1..=n_params {
            let k = known(ins, i)?;
            if !matches!(k.dtype, DType::I64 | DType::I32) {
                return invalid!("Tile: input {i} must be INT64, got {}", k.dtype);
            }
            vals.push(const_ints(known_opt(ins, i)));
        }
        let Some(xs) = x.shape else {
            return Ok(vec![(x.dtype, None)]);
        };
        let vals: Option<Vec<Vec<i64>>> = vals.into_iter().collect();
        let shape = match vals {
            None => vec![Dim::Unknown; xs.len()],
            Some(v) => {
                let reps = self.repeats(xs.len(), &v)?;
                xs.iter()
                    .zip(&reps)
                    .map(|(d, &r)| match (d, r) {
                        (_, 1) => Ok(d.clone()),
                        (_, 0) => Ok(Dim::Fixed(0)),
                        (Dim::Fixed(n), r) => n
                            .checked_mul(r)
                            .map(Dim::Fixed)
                            .ok_or_else(|| Error::TooLarge("Tile output size overflows".into())),
                        _ => Ok(Dim::Unknown),
                    })
                    .collect::<Result<_>>()?
            }
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
        let n_params = if self.legacy { 2 } else { 1 };
        let vals = (1..=n_params)
            .map(|i| arg(inputs, i)?.to_i64_vec())
            .collect::<Result<Vec<_>>>()?;
        let reps = self.repeats(x.rank(), &vals)?;
        let xst = strides(x.shape());
        let mut shape = Vec::with_capacity(x.rank());
        for (&d, &r) in x.shape().iter().zip(&reps) {
            shape.push(
                d.checked_mul(r)
                    .ok_or_else(|| Error::TooLarge("Tile output size overflows".into()))?,
            );
        }
        let y = remap("Tile", x, shape, out, || {
            let mut maps: Vec<AxisMap> = Vec::with_capacity(2 * x.rank());
            for ((&d, &s), &r) in x.shape().iter().zip(&xst).zip(&reps) {
                maps.push(axis_map(r, |_| Some(0))?);
                maps.push(axis_map(d, |j| Some(j * s))?);
            }
            Ok(maps)
        })?;
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
