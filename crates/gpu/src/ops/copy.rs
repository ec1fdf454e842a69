//! Launchers of strided copies (`copy.wgsl`: Transpose, Concat, Split,
//! slices, Gather with constant indices), of Gather with indices computed at
//! run time (`gather.wgsl`), of gathers separable by axis (`pick.wgsl`) and
//! of constant-mode Pad (`pad.wgsl`).

use super::{grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Result};

/// Most dims of a copy region after coalescing.
pub const MAX_RANK: usize = 8;

/// A region: element at coordinate `c` of `shape` moves from
/// `src_offset + c . src_strides` to `dst_offset + c . dst_strides` (elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub shape: Vec<usize>,
    pub src_offset: usize,
    pub src_strides: Vec<usize>,
    pub dst_offset: usize,
    pub dst_strides: Vec<usize>,
}

impl Region {
    /// Merges dims contiguous in both source and destination; drops size-1 dims.
    pub fn coalesced(&self) -> Region {
        let mut r = Region {
            shape: vec![],
            src_offset: self.src_offset,
            src_strides: vec![],
            dst_offset: self.dst_offset,
            dst_strides: vec![],
        };
        for d in 0..self.shape.len() {
            let (n, s, t) = (self.shape[d], self.src_strides[d], self.dst_strides[d]);
            if n == 1 {
                continue;
            }
            match (
                r.shape.last_mut(),
                r.src_strides.last_mut(),
                r.dst_strides.last_mut(),
            ) {
                (Some(ln), Some(ls), Some(lt)) if *ls == n * s && *lt == n * t => {
                    *ln *= n;
                    *ls = s;
                    *lt = t;
                }
                _ => {
                    r.shape.push(n);
                    r.src_strides.push(s);
                    r.dst_strides.push(t);
                }
            }
        }
        r
    }

    /// Transpose of a contiguous `shape` by `perm` into a contiguous output.
    pub fn transpose(shape: &[usize], perm: &[usize]) -> Region {
        let src = metal_mps_ir::strides(shape);
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        Region {
            src_strides: perm.iter().map(|&p| src[p]).collect(),
            dst_strides: metal_mps_ir::strides(&out),
            shape: out,
            src_offset: 0,
            dst_offset: 0,
        }
    }

    /// Places a contiguous `part` at `start` along `axis` of a contiguous `whole` (Concat).
    pub fn into_slice(part: &[usize], whole: &[usize], axis: usize, start: usize) -> Region {
        let dst = metal_mps_ir::strides(whole);
        Region {
            shape: part.to_vec(),
            src_offset: 0,
            src_strides: metal_mps_ir::strides(part),
            dst_offset: start * dst[axis],
            dst_strides: dst,
        }
    }

    /// Extracts the slice of size `part[axis]` at `start` along `axis` of a contiguous `whole` (Split).
    pub fn from_slice(whole: &[usize], part: &[usize], axis: usize, start: usize) -> Region {
        let src = metal_mps_ir::strides(whole);
        Region {
            shape: part.to_vec(),
            src_offset: start * src[axis],
            src_strides: src,
            dst_offset: 0,
            dst_strides: metal_mps_ir::strides(part),
        }
    }
}

/// The WGSL type moving elements of `bytes` bytes, if the adapter can.
pub fn mover(ctx: &GpuContext, bytes: usize) -> Option<Scalar> {
    match bytes {
        2 if ctx.caps.f16 => Some(Scalar::F16),
        4 => Some(Scalar::U32),
        8 => Some(Scalar::U32x2),
        _ => None,
    }
}

/// [`mover`], or the error naming `what` cannot move such elements here.
pub fn mover_for(ctx: &GpuContext, bytes: usize, what: &str) -> Result<Scalar> {
    mover(ctx, bytes).ok_or_else(|| {
        Error::Unsupported(format!("{what} of {bytes}-byte elements on this adapter"))
    })
}

/// Records the copy of `region` for elements of `elem_bytes` bytes.
pub fn copy(
    ctx: &GpuContext,
    elem_bytes: usize,
    region: &Region,
    src: Binding,
    dst: Binding,
) -> Result<Call> {
    let t = mover_for(ctx, elem_bytes, "copies")?;
    let r = region.coalesced();
    if r.shape.len() > MAX_RANK {
        return Err(Error::Unsupported(format!(
            "a copy of rank {} on the GPU",
            r.shape.len()
        )));
    }
    let n: usize = r.shape.iter().product();
    let w =
        |v: &[usize]| -> Result<Vec<u32>> { v.iter().map(|&x| u32_of(x, "copy stride")).collect() };
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(r.shape.len() as u32)
        .u32(u32_of(r.src_offset, "offset")?)
        .u32(u32_of(r.dst_offset, "offset")?)
        .words(&w(&r.shape)?, 2, 1)
        .words(&w(&r.src_strides)?, 2, 0)
        .words(&w(&r.dst_strides)?, 2, 0)
        .finish();
    let key = PipelineKey::new(Kernel::Copy, Variant::of(t), "main");
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![src, dst],
        groups: grid(n as u64)?,
    })
}

/// Records a constant-mode Pad of 4-byte elements: `begin[d]` elements before
/// axis `d` (negative: cropped), the rest of `out_shape` after it, filled with
/// the element whose bits are `value`.
pub fn pad(
    ctx: &GpuContext,
    in_shape: &[usize],
    out_shape: &[usize],
    begin: &[i64],
    value: u32,
    src: Binding,
    dst: Binding,
) -> Result<Call> {
    if in_shape.len() > MAX_RANK {
        return Err(Error::Unsupported(format!(
            "a Pad of rank {} on the GPU",
            in_shape.len()
        )));
    }
    let n: usize = out_shape.iter().product();
    let w =
        |v: &[usize]| -> Result<Vec<u32>> { v.iter().map(|&x| u32_of(x, "pad shape")).collect() };
    let begin: Vec<u32> = begin
        .iter()
        .map(|&b| {
            i32::try_from(b).map(|b| b as u32).map_err(|_| {
                Error::TooLarge(format!("pad {b} passes the GPU kernels' 32-bit indexing"))
            })
        })
        .collect::<Result<_>>()?;
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(in_shape.len() as u32)
        .u32(value)
        .u32(0)
        .words(&w(out_shape)?, 2, 1)
        .words(&w(in_shape)?, 2, 1)
        .words(&begin, 2, 0)
        .finish();
    let key = PipelineKey::new(Kernel::Pad, Variant::of(Scalar::U32), "main");
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![src, dst],
        groups: grid(n as u64)?,
    })
}

/// The shape of a Gather along one axis: `outer` blocks of `axis_dim` rows of
/// `inner` elements in the data; `count` indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherShape {
    pub outer: usize,
    pub axis_dim: usize,
    pub inner: usize,
    pub count: usize,
}

/// Records a Gather of elements of `elem_bytes` bytes whose indices (i32, or
/// i64 when `index64`) are read from `indices` on the device. The caller
/// checks the indices' range; the kernel clamps any it did not.
pub fn gather(
    ctx: &GpuContext,
    elem_bytes: usize,
    shape: GatherShape,
    index64: bool,
    data: Binding,
    indices: Binding,
    dst: Binding,
) -> Result<Call> {
    let t = mover_for(ctx, elem_bytes, "Gather")?;
    let GatherShape {
        outer,
        axis_dim,
        inner,
        count,
    } = shape;
    if axis_dim == 0 || inner == 0 {
        return Err(Error::Invalid("Gather from an empty axis".into()));
    }
    u32_of(outer * axis_dim * inner, "Gather data elements")?;
    let n = outer * count * inner;
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(u32_of(inner, "Gather row")?)
        .u32(u32_of(count, "Gather indices")?)
        .u32(u32_of(axis_dim, "Gather axis")?)
        .finish();
    let key = PipelineKey::new(Kernel::Gather, Variant::of(t), "main")
        .with("INDEX64", Const::Bool(index64));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![data, indices, dst],
        groups: grid(n as u64)?,
    })
}

/// Records a gather separable by axis: output element `c` (of `out_shape`) is
/// input element `(table[offsets[0] + c[0]], table[offsets[1] + c[1]], ...)`
/// of a contiguous `in_shape`, for elements of `elem_bytes` bytes; the
/// bindings are the input, the table (u32) and the output.
pub fn pick(
    ctx: &GpuContext,
    elem_bytes: usize,
    in_shape: &[usize],
    out_shape: &[usize],
    offsets: &[usize],
    [x, table, y]: [Binding; 3],
) -> Result<Call> {
    let t = mover_for(ctx, elem_bytes, "Resize")?;
    if out_shape.len() > MAX_RANK || in_shape.len() != out_shape.len() {
        return Err(Error::Unsupported(format!(
            "a pick of rank {} on the GPU",
            out_shape.len()
        )));
    }
    u32_of(in_shape.iter().product(), "input elements")?;
    let n: usize = out_shape.iter().product();
    let w = |v: &[usize]| -> Result<Vec<u32>> { v.iter().map(|&x| u32_of(x, "pick")).collect() };
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(out_shape.len() as u32)
        .u32(0)
        .u32(0)
        .words(&w(out_shape)?, 2, 1)
        .words(&w(&metal_mps_ir::strides(in_shape))?, 2, 0)
        .words(&w(offsets)?, 2, 0)
        .finish();
    let key = PipelineKey::new(Kernel::Pick, Variant::of(t), "main");
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, table, y],
        groups: grid(n as u64)?,
    })
}
