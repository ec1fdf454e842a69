//! MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv: exact integer
//! products (i64 accumulation) of zero-point-shifted 8-bit inputs.

use crate::attrs::Attributes;
use crate::support::{arg, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, fixed_shape, invalid, unsupported, DType, Dim, DynOp, Element,
    Fact, Op, Operator, Out, Result, Shape, Tensor,
};
use std::any::Any;

use super::linear::{int_range, promote, round_to};

fn check_int8(op: &str, what: &str, d: DType) -> Result<()> {
    match d {
        DType::U8 | DType::I8 => Ok(()),
        d => unsupported!("{op}: {what} of type {d} (UINT8 or INT8 expected)"),
    }
}

/// The shapes of np.matmul: (batch..., M, N) and the flags of 1-D operands.
fn matmul_shape(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return invalid!("{op}: matmul of a scalar");
    }
    let (m, ka) = if a.len() == 1 {
        (1, a[0])
    } else {
        (a[a.len() - 2], a[a.len() - 1])
    };
    let (kb, n) = if b.len() == 1 {
        (b[0], 1)
    } else {
        (b[b.len() - 2], b[b.len() - 1])
    };
    if ka != kb {
        return invalid!("{op}: inner dimensions differ ({a:?} x {b:?})");
    }
    let ab = &a[..a.len().saturating_sub(2)];
    let bb = &b[..b.len().saturating_sub(2)];
    let batch = metal_mps_ir::broadcast_shapes(ab, bb).ok_or_else(|| {
        metal_mps_ir::Error::Invalid(format!(
            "{op}: batch dims of {a:?} and {b:?} do not broadcast"
        ))
    })?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

fn matmul_fact(op: &str, a: &Known, b: &Known, dtype: DType) -> Result<Fact> {
    let shape: Option<Shape> = match (a.shape.and_then(fixed_shape), b.shape.and_then(fixed_shape))
    {
        (Some(x), Some(y)) => Some(
            matmul_shape(op, &x, &y)?
                .into_iter()
                .map(Dim::Fixed)
                .collect(),
        ),
        _ => None,
    };
    Ok((dtype, shape))
}

/// Per-row (A, length M) or per-column (B, length N) zero points / scales;
/// a single value applies everywhere.
fn per(op: &str, what: &str, t: Option<&Tensor>, len: usize) -> Result<Option<Vec<f64>>> {
    let Some(t) = t else { return Ok(None) };
    let v = t.to_f64_vec();
    if v.len() == 1 || (t.rank() <= 1 && v.len() == len) {
        Ok(Some(v))
    } else {
        invalid!(
            "{op}: {what} of shape {:?} is neither a scalar nor of length {len}",
            t.shape()
        )
    }
}

fn pick(v: &Option<Vec<f64>>, i: usize) -> f64 {
    match v {
        None => 0.0,
        Some(v) if v.len() == 1 => v[0],
        Some(v) => v[i],
    }
}

/// (A - a_zero) x (B - b_zero) exactly, as i64 values, with the output shape.
fn int_matmul(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    az: Option<&Tensor>,
    bz: Option<&Tensor>,
) -> Result<(Vec<usize>, Vec<i64>)> {
    let out_shape = matmul_shape(op, a.shape(), b.shape())?;
    let (ash, bsh) = (a.shape(), b.shape());
    let m = if ash.len() == 1 {
        1
    } else {
        ash[ash.len() - 2]
    };
    let k = ash[ash.len() - 1];
    let n = if bsh.len() == 1 {
        1
    } else {
        bsh[bsh.len() - 1]
    };
    let az = per(op, "a_zero_point", az, m)?;
    let bz = per(op, "b_zero_point", bz, n)?;
    let av = a.to_i64_vec()?;
    let bv = b.to_i64_vec()?;
    let ab = &ash[..ash.len().saturating_sub(2)];
    let bb = &bsh[..bsh.len().saturating_sub(2)];
    let batch = metal_mps_ir::broadcast_shapes(ab, bb).unwrap_or_default();
    let nb = checked_numel(&batch)?;
    let aoff = crate::support::broadcast_offsets(ab, &batch)?;
    let boff = crate::support::broadcast_offsets(bb, &batch)?;
    let total = nb
        .checked_mul(m)
        .and_then(|v| v.checked_mul(n))
        .ok_or_else(|| metal_mps_ir::Error::TooLarge(format!("{op}: output")))?;
    let mut y = metal_mps_ir::limits::try_vec::<i64>(total)?;
    for bi in 0..nb {
        let (ao, bo) = (aoff[bi] * m * k, boff[bi] * k * n);
        for i in 0..m {
            let zi = pick(&az, i) as i64;
            for j in 0..n {
                let zj = pick(&bz, j) as i64;
                let mut acc = 0i64;
                for p in 0..k {
                    acc += (av[ao + i * k + p] - zi) * (bv[bo + p * n + j] - zj);
                }
                y[(bi * m + i) * n + j] = acc;
            }
        }
    }
    Ok((out_shape, y))
}

#[derive(Debug)]
struct MatMulInteger;

pub fn matmul_integer(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(MatMulInteger)))
}

impl Operator for MatMulInteger {
    fn name(&self) -> &str {
        "MatMulInteger"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (a, b) = (known(ins, 0)?, known(ins, 1)?);
        check_int8("MatMulInteger", "A", a.dtype)?;
        check_int8("MatMulInteger", "B", b.dtype)?;
        Ok(vec![matmul_fact("MatMulInteger", a, b, DType::I32)?])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "MatMulInteger";
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        check_int8(op, "A", a.dtype())?;
        check_int8(op, "B", b.dtype())?;
        let (shape, v) = int_matmul(op, a, b, opt(inputs, 2), opt(inputs, 3))?;
        let mut y = out.tensor(0, DType::I32, shape)?;
        for (o, &x) in y.as_slice_mut::<i32>()?.iter_mut().zip(&v) {
            *o = x as i32;
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The float factor a_scale * b_scale / y_scale in the scales' type.
fn requant_factor(sd: DType, a: f64, b: f64, y: f64) -> f64 {
    round_to(sd, round_to(sd, a * b) / y)
}

fn scalar_of(op: &str, what: &str, t: &Tensor) -> Result<f64> {
    let v = t.to_f64_vec();
    if v.len() != 1 {
        return invalid!(
            "{op}: {what} must hold one value, has shape {:?}",
            t.shape()
        );
    }
    Ok(v[0])
}

/// Writes round(v), clamped to `to`'s range, as `to`.
fn store_clamped(to: DType, shape: Vec<usize>, vals: &[f64], out: &mut Out) -> Result<Tensor> {
    let (lo, hi) = int_range(to).unwrap_or((0, 255));
    let mut y = out.tensor(0, to, shape)?;
    dispatch_dtype!(to, T => {
        for (o, &v) in y.as_slice_mut::<T>()?.iter_mut().zip(vals) {
            *o = T::from_f64(v.round_ties_even().clamp(lo as f64, hi as f64));
        }
    });
    Ok(y)
}

#[derive(Debug)]
struct QLinearMatMul;

pub fn qlinear_matmul(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(QLinearMatMul)))
}

impl Operator for QLinearMatMul {
    fn name(&self) -> &str {
        "QLinearMatMul"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let op = "QLinearMatMul";
        let (a, b) = (known(ins, 0)?, known(ins, 3)?);
        check_int8(op, "a", a.dtype)?;
        check_int8(op, "b", b.dtype)?;
        let y = known_opt(ins, 7).map_or(a.dtype, |z| z.dtype);
        check_int8(op, "y_zero_point", y)?;
        Ok(vec![matmul_fact(op, a, b, y)?])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "QLinearMatMul";
        let a = arg(inputs, 0)?;
        let b = arg(inputs, 3)?;
        check_int8(op, "a", a.dtype())?;
        check_int8(op, "b", b.dtype())?;
        let (a_s, b_s, y_s) = (arg(inputs, 1)?, arg(inputs, 4)?, arg(inputs, 6)?);
        let yz = opt(inputs, 7);
        let to = yz.map_or(a.dtype(), Tensor::dtype);
        check_int8(op, "y_zero_point", to)?;
        for s in [a_s, b_s, y_s] {
            if !s.dtype().is_float() {
                return unsupported!("{op}: scale of type {}", s.dtype());
            }
        }
        let sd = promote(promote(a_s.dtype(), b_s.dtype()), y_s.dtype());
        let (shape, c) = int_matmul(op, a, b, opt(inputs, 2), opt(inputs, 5))?;
        let ash = a.shape();
        let m = if ash.len() == 1 {
            1
        } else {
            ash[ash.len() - 2]
        };
        let n = if b.rank() == 1 {
            1
        } else {
            b.shape()[b.rank() - 1]
        };
        let asv = per(op, "a_scale", Some(a_s), m)?;
        let bsv = per(op, "b_scale", Some(b_s), n)?;
        let ysv = scalar_of(op, "y_scale", y_s)?;
        let yzv = match yz {
            Some(z) => scalar_of(op, "y_zero_point", z)?,
            None => 0.0,
        };
        let vals: Vec<f64> = c
            .iter()
            .enumerate()
            .map(|(idx, &v)| {
                let (i, j) = ((idx / n) % m, idx % n);
                let f = requant_factor(sd, pick(&asv, i), pick(&bsv, j), ysv);
                v as f64 * f + yzv
            })
            .collect();
        Ok(vec![store_clamped(to, shape, &vals, out)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Conv attributes, resolved against the input shape.
#[derive(Debug, Clone)]
struct ConvAttrs {
    auto_pad: String,
    dilations: Option<Vec<i64>>,
    group: i64,
    kernel_shape: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

impl ConvAttrs {
    fn parse(a: &Attributes) -> Result<ConvAttrs> {
        Ok(ConvAttrs {
            auto_pad: a.str_or("auto_pad", "NOTSET")?,
            dilations: a.ints("dilations")?,
            group: a.int("group", 1)?,
            kernel_shape: a.ints("kernel_shape")?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        })
    }
}

/// Everything a direct convolution loop needs.
struct Geometry {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    spatial_in: Vec<usize>,
    kernel: Vec<usize>,
    out: Vec<usize>,
    strides: Vec<usize>,
    dil: Vec<usize>,
    pad_begin: Vec<usize>,
}

fn geometry(op: &str, at: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Geometry> {
    if x.len() < 3 || w.len() != x.len() {
        return invalid!(
            "{op}: x shape {x:?} and w shape {w:?} (need N x C x D... and M x C/group x k...)"
        );
    }
    let sd = x.len() - 2;
    let group = usize::try_from(at.group)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| metal_mps_ir::Error::Invalid(format!("{op}: group {}", at.group)))?;
    let (n, c, m) = (x[0], x[1], w[0]);
    if c != w[1] * group || m % group != 0 {
        return invalid!("{op}: channels of x {x:?}, w {w:?} and group {group} disagree");
    }
    let kernel = w[2..].to_vec();
    if let Some(k) = &at.kernel_shape {
        if k.len() != sd || k.iter().zip(&kernel).any(|(&a, &b)| a as usize != b) {
            return invalid!("{op}: kernel_shape {k:?} differs from w's {kernel:?}");
        }
    }
    let list = |v: &Option<Vec<i64>>, len: usize, name: &str| -> Result<Vec<usize>> {
        match v {
            None => Ok(vec![if name == "pads" { 0 } else { 1 }; len]),
            Some(v) if v.len() == len && v.iter().all(|&e| e >= 0) => {
                Ok(v.iter().map(|&e| e as usize).collect())
            }
            Some(v) => invalid!("{op}: {name} {v:?} (need {len} non-negative values)"),
        }
    };
    let strides = list(&at.strides, sd, "strides")?;
    let dil = list(&at.dilations, sd, "dilations")?;
    if strides.contains(&0) || dil.contains(&0) {
        return invalid!("{op}: zero stride or dilation");
    }
    let pads = list(&at.pads, 2 * sd, "pads")?;
    let mut pad_begin = vec![0; sd];
    let mut out = vec![0; sd];
    for i in 0..sd {
        let ext = (kernel[i].max(1) - 1) * dil[i] + 1;
        let inn = x[2 + i];
        let (pb, pe) = match at.auto_pad.as_str() {
            "NOTSET" => (pads[i], pads[i + sd]),
            "VALID" => (0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = inn.div_ceil(strides[i]);
                let total = ((o.max(1) - 1) * strides[i] + ext).saturating_sub(inn);
                if at.auto_pad == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            }
            p => return invalid!("{op}: auto_pad '{p}'"),
        };
        let padded = inn + pb + pe;
        if padded < ext {
            return invalid!("{op}: kernel extent {ext} exceeds the padded input {padded}");
        }
        pad_begin[i] = pb;
        out[i] = (padded - ext) / strides[i] + 1;
    }
    Ok(Geometry {
        n,
        c,
        m,
        group,
        spatial_in: x[2..].to_vec(),
        kernel,
        out,
        strides,
        dil,
        pad_begin,
    })
}

impl Geometry {
    fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.n, self.m];
        s.extend(&self.out);
        s
    }

    /// The exact convolution of `x - xz` with `w - wz[m]`, plus `bias[m]`.
    fn run(
        &self,
        x: &[i64],
        xz: i64,
        w: &[i64],
        wz: &dyn Fn(usize) -> i64,
        bias: Option<&[i64]>,
    ) -> Result<Vec<i64>> {
        let sd = self.kernel.len();
        let in_sp = checked_numel(&self.spatial_in)?;
        let out_sp = checked_numel(&self.out)?;
        let k_sp = checked_numel(&self.kernel)?;
        let cg = self.c / self.group;
        let mg = self.m / self.group;
        let total = checked_numel(&self.out_shape())?;
        let mut y = metal_mps_ir::limits::try_vec::<i64>(total)?;
        let mut oc = vec![0usize; sd];
        let mut kc = vec![0usize; sd];
        for b in 0..self.n {
            for mo in 0..self.m {
                let g = mo / mg;
                let zw = wz(mo);
                for op in 0..out_sp {
                    unravel(op, &self.out, &mut oc);
                    let mut acc = bias.map_or(0, |bv| bv[mo]);
                    for ci in 0..cg {
                        let cin = g * cg + ci;
                        let xbase = (b * self.c + cin) * in_sp;
                        let wbase = (mo * cg + ci) * k_sp;
                        'k: for kp in 0..k_sp {
                            unravel(kp, &self.kernel, &mut kc);
                            let mut off = 0usize;
                            for d in 0..sd {
                                let pos = (oc[d] * self.strides[d] + kc[d] * self.dil[d]) as isize
                                    - self.pad_begin[d] as isize;
                                if pos < 0 || pos as usize >= self.spatial_in[d] {
                                    continue 'k;
                                }
                                off = off * self.spatial_in[d] + pos as usize;
                            }
                            acc += (x[xbase + off] - xz) * (w[wbase + kp] - zw);
                        }
                    }
                    y[(b * self.m + mo) * out_sp + op] = acc;
                }
            }
        }
        Ok(y)
    }
}

fn unravel(mut i: usize, dims: &[usize], out: &mut [usize]) {
    for d in (0..dims.len()).rev() {
        out[d] = i % dims[d];
        i /= dims[d];
    }
}

fn conv_fact(op: &str, at: &ConvAttrs, x: &Known, w: &Known, dtype: DType) -> Result<Fact> {
    let shape = match (x.shape.and_then(fixed_shape), w.shape.and_then(fixed_shape)) {
        (Some(xs), Some(ws)) => Some(
            geometry(op, at, &xs, &ws)?
                .out_shape()
                .into_iter()
                .map(Dim::Fixed)
                .collect(),
        ),
        _ => x.shape.map(|s| vec![Dim::Unknown; s.len()]),
    };
    Ok((dtype, shape))
}

/// Weight zero point: one value, or one per output channel.
fn w_zero(op: &str, t: Option<&Tensor>, m: usize) -> Result<Vec<i64>> {
    match t {
        None => Ok(vec![0]),
        Some(t) => {
            let v = t.to_i64_vec()?;
            if v.len() == 1 || v.len() == m {
                Ok(v)
            } else {
                invalid!(
                    "{op}: weight zero point of shape {:?} for {m} output channels",
                    t.shape()
                )
            }
        }
    }
}

#[derive(Debug)]
struct ConvInteger(ConvAttrs);

pub fn conv_integer(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(ConvInteger(ConvAttrs::parse(
        cx.attrs,
    )?))))
}

impl Operator for ConvInteger {
    fn name(&self) -> &str {
        "ConvInteger"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, w) = (known(ins, 0)?, known(ins, 1)?);
        check_int8("ConvInteger", "x", x.dtype)?;
        check_int8("ConvInteger", "w", w.dtype)?;
        Ok(vec![conv_fact("ConvInteger", &self.0, x, w, DType::I32)?])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "ConvInteger";
        let (x, w) = (arg(inputs, 0)?, arg(inputs, 1)?);
        check_int8(op, "x", x.dtype())?;
        check_int8(op, "w", w.dtype())?;
        let g = geometry(op, &self.0, x.shape(), w.shape())?;
        let xz = match opt(inputs, 2) {
            Some(z) => scalar_of(op, "x_zero_point", z)? as i64,
            None => 0,
        };
        let wz = w_zero(op, opt(inputs, 3), g.m)?;
        let wzf = |m: usize| if wz.len() == 1 { wz[0] } else { wz[m] };
        let v = g.run(&x.to_i64_vec()?, xz, &w.to_i64_vec()?, &wzf, None)?;
        let mut y = out.tensor(0, DType::I32, g.out_shape())?;
        for (o, &a) in y.as_slice_mut::<i32>()?.iter_mut().zip(&v) {
            *o = a as i32;
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct QLinearConv(ConvAttrs);

pub fn qlinear_conv(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(QLinearConv(ConvAttrs::parse(
        cx.attrs,
    )?))))
}

impl Operator for QLinearConv {
    fn name(&self) -> &str {
        "QLinearConv"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let op = "QLinearConv";
        let (x, w) = (known(ins, 0)?, known(ins, 3)?);
        check_int8(op, "x", x.dtype)?;
        check_int8(op, "w", w.dtype)?;
        let y = known_opt(ins, 7).map_or(x.dtype, |z| z.dtype);
        check_int8(op, "y_zero_point", y)?;
        Ok(vec![conv_fact(op, &self.0, x, w, y)?])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "QLinearConv";
        let x = arg(inputs, 0)?;
        let w = arg(inputs, 3)?;
        check_int8(op, "x", x.dtype())?;
        check_int8(op, "w", w.dtype())?;
        let (xs, ws, ys) = (arg(inputs, 1)?, arg(inputs, 4)?, arg(inputs, 6)?);
        let yz = opt(inputs, 7);
        let to = yz.map_or(x.dtype(), Tensor::dtype);
        check_int8(op, "y_zero_point", to)?;
        let g = geometry(op, &self.0, x.shape(), w.shape())?;
        let xz = match opt(inputs, 2) {
            Some(z) => scalar_of(op, "x_zero_point", z)? as i64,
            None => 0,
        };
        let wz = w_zero(op, opt(inputs, 5), g.m)?;
        let wzf = |m: usize| if wz.len() == 1 { wz[0] } else { wz[m] };
        let bias = match opt(inputs, 8) {
            Some(b) if b.dtype() == DType::I32 && b.numel() == g.m => Some(b.to_i64_vec()?),
            Some(b) => {
                return invalid!(
                    "{op}: bias must be INT32 of {} values, is {} {:?}",
                    g.m,
                    b.dtype(),
                    b.shape()
                )
            }
            None => None,
        };
        let c = g.run(
            &x.to_i64_vec()?,
            xz,
            &w.to_i64_vec()?,
            &wzf,
            bias.as_deref(),
        )?;
        let xsv = scalar_of(op, "x_scale", xs)?;
        let wsv = ws.to_f64_vec();
        if wsv.len() != 1 && wsv.len() != g.m {
            return invalid!(
                "{op}: w_scale of shape {:?} for {} output channels",
                ws.shape(),
                g.m
            );
        }
        let ysv = scalar_of(op, "y_scale", ys)?;
        let yzv = match yz {
            Some(z) => scalar_of(op, "y_zero_point", z)?,
            None => 0.0,
        };
        let sd = promote(promote(xs.dtype(), ws.dtype()), ys.dtype());
        let out_sp = checked_numel(&g.out)?;
        let vals: Vec<f64> = c
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let m = (i / out_sp.max(1)) % g.m;
                let s = if wsv.len() == 1 { wsv[0] } else { wsv[m] };
                v as f64 * requant_factor(sd, xsv, s, ysv) + yzv
            })
            .collect();
        Ok(vec![store_clamped(to, g.out_shape(), &vals, out)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_attrs(strides: Option<Vec<i64>>) -> ConvAttrs {
        ConvAttrs {
            auto_pad: "NOTSET".into(),
            dilations: None,
            group: 1,
            kernel_shape: None,
            pads: None,
            strides,
        }
    }

    #[test]
    fn conv_integer_strided_with_zero_point() {
        // x - 1 = [0, 1, 2, 3, 4]; w = [1, 2]; stride 2: [0 + 2, 2 + 6].
        let x = Tensor::from_vec(vec![1, 1, 5], vec![1u8, 2, 3, 4, 5]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2], vec![1u8, 2]).unwrap();
        let xz = Tensor::scalar(1u8);
        let op = ConvInteger(conv_attrs(Some(vec![2])));
        let y = op
            .eval(&[Some(&x), Some(&w), Some(&xz)], 1, &mut Out::fresh())
            .unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 2]);
        assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![2, 8]);
    }

    #[test]
    fn matmul_integer_per_column_zero_point() {
        // B - [1, 2] per column = [[2, 2], [4, 4]]; [1, 2] x that = [10, 10].
        let a = Tensor::from_vec(vec![1, 2], vec![1u8, 2]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![3u8, 4, 5, 6]).unwrap();
        let bz = Tensor::from_vec(vec![2], vec![1u8, 2]).unwrap();
        let y = MatMulInteger
            .eval(&[Some(&a), Some(&b), None, Some(&bz)], 1, &mut Out::fresh())
            .unwrap();
        assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![10, 10]);
    }
}
