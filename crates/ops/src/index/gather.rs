//! GatherElements and GatherND (with `batch_dims` from opset 12).

use super::util::{axis_offsets, check_index_dtype, indices, wrap};
use crate::support::{arg, axis, gather_elements, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, Dim, DynOp, Error, Fact, Op, Operator, Out, PickedRows, Result, Tensor,
};
use std::any::Any;

/// `GatherElements(data, indices)`: `out[i][j][k] = data[i][indices[i][j][k]][k]` (axis 1).
#[derive(Debug)]
struct GatherElements {
    axis: i64,
}

pub fn build_gather_elements(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(GatherElements {
        axis: cx.attrs.int("axis", 0)?,
    })))
}

impl Operator for GatherElements {
    fn name(&self) -> &str {
        "GatherElements"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (d, i) = (known(ins, 0)?, known(ins, 1)?);
        check_index_dtype("GatherElements", i.dtype)?;
        if let (Some(ds), Some(is)) = (d.shape, i.shape) {
            if ds.len() != is.len() {
                return metal_mps_ir::invalid!(
                    "GatherElements: indices of rank {} for data of rank {}",
                    is.len(),
                    ds.len()
                );
            }
            axis("GatherElements", self.axis, ds.len())?;
        }
        Ok(vec![(d.dtype, i.shape.map(<[Dim]>::to_vec))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let (d, i) = (arg(ins, 0)?, arg(ins, 1)?);
        let ax = axis("GatherElements", self.axis, d.rank())?;
        let idx = indices("GatherElements", i)?;
        let offs = axis_offsets("GatherElements", d.shape(), i.shape(), ax, &idx)?;
        let y = gather_elements(d, &offs, i.shape().to_vec())?;
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `GatherND(data, indices)`: slices of `data` addressed by the last axis of
/// `indices`, after `batch_dims` leading axes shared by both.
#[derive(Debug)]
struct GatherNd {
    batch_dims: usize,
}

pub fn build_gather_nd(cx: &BuildCx) -> Result<Op> {
    let b = cx.attrs.int("batch_dims", 0)?;
    let batch_dims = usize::try_from(b)
        .map_err(|_| Error::InvalidModel(format!("GatherND: negative batch_dims {b}")))?;
    Ok(Op::Dyn(DynOp::new(GatherNd { batch_dims })))
}

/// The plan of a GatherND/ScatterND: `(batch, tuples per batch, m, slice
/// size, data offsets of each tuple's slice)` with `out shape`.
pub struct NdPlan {
    pub offsets: Vec<usize>,
    pub slice: usize,
    pub out_shape: Vec<usize>,
}

/// Resolves every index tuple of `indices` into a data offset.
pub fn nd_plan(
    op: &str,
    data: &[usize],
    ishape: &[usize],
    idx: &[i64],
    b: usize,
) -> Result<NdPlan> {
    let q = ishape.len();
    let r = data.len();
    let Some(&m) = ishape.last() else {
        return metal_mps_ir::invalid!("{op}: indices must have rank >= 1");
    };
    if b >= q || b >= r || b + m > r {
        return metal_mps_ir::invalid!(
            "{op}: indices of shape {ishape:?} and batch_dims {b} do not fit data of shape {data:?}"
        );
    }
    if data[..b] != ishape[..b] {
        return metal_mps_ir::invalid!(
            "{op}: batch dims differ: data {data:?}, indices {ishape:?}"
        );
    }
    let slice: usize = data[b + m..].iter().product();
    let per_batch_data: usize = data[b..].iter().product();
    let tuples_per_batch: usize = ishape[b..q - 1].iter().product();
    let st = metal_mps_ir::strides(&data[b..]);
    let n_tuples = checked_numel(&ishape[..q - 1])?;
    let mut offsets = Vec::with_capacity(n_tuples);
    for t in 0..n_tuples {
        let batch = t.checked_div(tuples_per_batch).unwrap_or(0);
        let mut o = batch * per_batch_data;
        for k in 0..m {
            o += wrap(op, idx[t * m + k], data[b + k])? * st[k];
        }
        offsets.push(o);
    }
    let mut out_shape = ishape[..q - 1].to_vec();
    out_shape.extend_from_slice(&data[b + m..]);
    Ok(NdPlan {
        offsets,
        slice,
        out_shape,
    })
}

impl Operator for GatherNd {
    fn name(&self) -> &str {
        "GatherND"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (d, i) = (known(ins, 0)?, known(ins, 1)?);
        check_index_dtype("GatherND", i.dtype)?;
        let shape = match (d.shape, i.shape) {
            (Some(ds), Some(is)) => match is.last().and_then(Dim::fixed) {
                Some(m) if self.batch_dims + m <= ds.len() && !is.is_empty() => {
                    let mut s = is[..is.len() - 1].to_vec();
                    s.extend_from_slice(&ds[self.batch_dims + m..]);
                    Some(s)
                }
                Some(_) => {
                    return metal_mps_ir::invalid!(
                        "GatherND: indices do not fit data of rank {}",
                        ds.len()
                    )
                }
                None => None,
            },
            _ => None,
        };
        Ok(vec![(d.dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (d, i) = (arg(ins, 0)?, arg(ins, 1)?);
        let idx = indices("GatherND", i)?;
        let p = nd_plan("GatherND", d.shape(), i.shape(), &idx, self.batch_dims)?;
        let size = d.dtype().size();
        let mut y = out.tensor(0, d.dtype(), p.out_shape)?;
        let (src, dst) = (d.as_bytes(), y.as_bytes_mut());
        let n = p.slice * size;
        for (t, &o) in p.offsets.iter().enumerate() {
            dst[t * n..(t + 1) * n].copy_from_slice(&src[o * size..o * size + n]);
        }
        Ok(vec![y])
    }

    fn picked_rows(&self, x_shape: &[usize], constants: &[Option<&Tensor>]) -> Option<PickedRows> {
        let i = (*constants.get(1)?)?;
        let idx = indices("GatherND", i).ok()?;
        let p = nd_plan("GatherND", x_shape, i.shape(), &idx, self.batch_dims).ok()?;
        // Every offset starts a slice: a multiple of the slice's size.
        let rows = p
            .offsets
            .iter()
            .map(|o| o.checked_div(p.slice))
            .collect::<Option<_>>()?;
        Some(PickedRows { rows, row: p.slice })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
