//! Pools the built-in Pool op does not cover: MaxPool with its Indices output
//! (and storage_order), LpPool, GlobalLpPool, MaxUnpool and MaxRoiPool.

use super::common::{auto_pad, per_axis, pool_geometry, store, store_i64, values, zeros, AutoPad};
use crate::support::{arg, check_dtype, check_float, known, opt, unknown_dims};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, fixed_shape, from_fixed, DType, Dim, DynOp, Error, Fact, Op, Operator, Out,
    Result, Tensor,
};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// MaxPool; `true`: indices in column-major order (storage_order=1).
    Max(bool),
    Lp(f64),
}

/// Output sizes, pads (begins then ends), strides and dilations.
type Geometry = (Vec<usize>, Vec<i64>, Vec<i64>, Vec<i64>);

#[derive(Debug)]
struct Pool {
    name: &'static str,
    kind: Kind,
    kernel: Vec<i64>,
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    auto: AutoPad,
    ceil_mode: bool,
}

fn lp_p(cx: &BuildCx) -> Result<f64> {
    let p = cx.attrs.float("p", 2.0)? as f64;
    if p.is_nan() || p <= 0.0 {
        return metal_mps_ir::invalid!("{}: p must be positive, got {p}", cx.op_type);
    }
    Ok(p)
}

/// MaxPool with two outputs or storage_order=1, and LpPool.
pub(crate) fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let (name, kind) = match cx.op_type {
        "MaxPool" => ("MaxPool", Kind::Max(a.int("storage_order", 0)? != 0)),
        "LpPool" => ("LpPool", Kind::Lp(lp_p(cx)?)),
        other => return metal_mps_ir::unsupported!("pool '{other}'"),
    };
    let kernel = a
        .ints("kernel_shape")?
        .ok_or_else(|| Error::InvalidModel(format!("{name} needs 'kernel_shape'")))?;
    Ok(Op::Dyn(DynOp::new(Pool {
        name,
        kind,
        kernel,
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        auto: auto_pad(name, a.string("auto_pad")?)?,
        ceil_mode: a.flag("ceil_mode", false)?,
    })))
}

impl Pool {
    fn geometry(&self, spatial: &[usize]) -> Result<Geometry> {
        let n = self.kernel.len();
        if spatial.len() != n {
            return metal_mps_ir::invalid!(
                "{}: kernel_shape has {} values for {} spatial axes",
                self.name,
                n,
                spatial.len()
            );
        }
        let strides = per_axis(self.name, "strides", self.strides.clone(), n, 1)?;
        let dilations = per_axis(self.name, "dilations", self.dilations.clone(), n, 1)?;
        let pads = per_axis(self.name, "pads", self.pads.clone(), 2 * n, 0)?;
        let (out, p) = pool_geometry(
            self.name,
            spatial,
            &self.kernel,
            &strides,
            &dilations,
            &pads,
            self.auto,
            self.ceil_mode,
        )?;
        Ok((out, p, strides, dilations))
    }

    fn check(&self, dtype: DType) -> Result<()> {
        match self.kind {
            Kind::Max(_) => check_dtype(
                self.name,
                dtype,
                &[
                    DType::F32,
                    DType::F16,
                    DType::F64,
                    DType::BF16,
                    DType::I8,
                    DType::U8,
                ],
            ),
            Kind::Lp(_) => check_float(self.name, dtype),
        }
    }
}

impl Operator for Pool {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        self.check(x.dtype)?;
        let shape = match x.shape {
            Some(s) if s.len() >= 2 => {
                let mut v = s[..2].to_vec();
                match fixed_shape(&s[2..]) {
                    Some(sp) => v.extend(from_fixed(&self.geometry(&sp)?.0)),
                    None => v.extend(vec![Dim::Unknown; s.len() - 2]),
                }
                Some(v)
            }
            Some(s) => return metal_mps_ir::invalid!("{}: input of rank {}", self.name, s.len()),
            None => None,
        };
        let mut facts = vec![(x.dtype, shape.clone())];
        if n_out > 1 {
            facts.push((DType::I64, shape));
        }
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        self.check(x.dtype())?;
        let xs = x.shape();
        if xs.len() < 3 {
            return metal_mps_ir::invalid!(
                "{}: input of rank {} (want 3 or more)",
                self.name,
                xs.len()
            );
        }
        let sp = &xs[2..];
        let (osp, pads, strides, dil) = self.geometry(sp)?;
        let nsp = sp.len();
        let nc = xs[0] * xs[1];
        let hw_in: usize = sp.iter().product();
        let mut oshape = xs[..2].to_vec();
        oshape.extend(&osp);
        let total = checked_numel(&oshape)?;
        let hw_out: usize = osp.iter().product();
        let xv = values(x)?;
        let mut y = zeros(total)?;
        let mut idx = metal_mps_ir::limits::try_vec::<i64>(if n_out > 1 { total } else { 0 })?;
        // Row-major and column-major strides of the spatial axes.
        let mut rstr = vec![1usize; nsp];
        let mut cstr = vec![1usize; nsp];
        for a in (0..nsp.saturating_sub(1)).rev() {
            rstr[a] = rstr[a + 1] * sp[a + 1];
        }
        for a in 1..nsp {
            cstr[a] = cstr[a - 1] * sp[a - 1];
        }
        let kprod = checked_numel(&self.kernel.iter().map(|&k| k as usize).collect::<Vec<_>>())?;
        let mut o = vec![0usize; nsp];
        let mut k = vec![0usize; nsp];
        // The input positions (row-major, column-major offsets) of one window.
        let mut taps: Vec<(usize, usize)> = metal_mps_ir::limits::try_vec(kprod)?;
        for p in 0..hw_out {
            taps.clear();
            k.iter_mut().for_each(|v| *v = 0);
            for _ in 0..kprod {
                let mut off = 0usize;
                let mut coff = 0usize;
                let mut inside = true;
                for a in 0..nsp {
                    let i = o[a] as i64 * strides[a] - pads[a] + k[a] as i64 * dil[a];
                    if i < 0 || i >= sp[a] as i64 {
                        inside = false;
                        break;
                    }
                    off += i as usize * rstr[a];
                    coff += i as usize * cstr[a];
                }
                if inside {
                    taps.push((off, coff));
                }
                for a in (0..nsp).rev() {
                    k[a] += 1;
                    if k[a] < self.kernel[a] as usize {
                        break;
                    }
                    k[a] = 0;
                }
            }
            for c in 0..nc {
                let src = &xv[c * hw_in..(c + 1) * hw_in];
                let dst = c * hw_out + p;
                match self.kind {
                    Kind::Max(col) => {
                        let mut m: Option<(f64, usize)> = None;
                        for &(off, coff) in taps.iter() {
                            let v = src[off];
                            if m.is_none_or(|(b, _)| v > b) {
                                m = Some((v, if col { coff } else { off }));
                            }
                        }
                        if let Some((v, i)) = m {
                            y[dst] = v;
                            if !idx.is_empty() {
                                idx[dst] = (c * hw_in + i) as i64;
                            }
                        } else if !idx.is_empty() {
                            idx[dst] = -1;
                        }
                    }
                    Kind::Lp(pw) => {
                        let s: f64 = taps.iter().map(|&(off, _)| src[off].abs().powf(pw)).sum();
                        y[dst] = s.powf(1.0 / pw);
                    }
                }
            }
            for a in (0..nsp).rev() {
                o[a] += 1;
                if o[a] < osp[a] {
                    break;
                }
                o[a] = 0;
            }
        }
        let mut res = vec![store(out, 0, x.dtype(), oshape.clone(), &y)?];
        if n_out > 1 {
            res.push(store_i64(out, 1, oshape, &idx)?);
        }
        Ok(res)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// GlobalLpPool: the p-norm over every spatial position.
#[derive(Debug)]
struct GlobalLp {
    p: f64,
}

pub(crate) fn build_global_lp(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(GlobalLp { p: lp_p(cx)? })))
}

impl Operator for GlobalLp {
    fn name(&self) -> &str {
        "GlobalLpPool"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float("GlobalLpPool", x.dtype)?;
        let shape = x.shape.map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Fixed(1) })
                .collect()
        });
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        check_float("GlobalLpPool", x.dtype())?;
        let xs = x.shape();
        if xs.len() < 2 {
            return metal_mps_ir::invalid!("GlobalLpPool: input of rank {}", xs.len());
        }
        let nc = xs[0] * xs[1];
        let hw: usize = xs[2..].iter().product();
        let xv = values(x)?;
        let y: Vec<f64> = (0..nc)
            .map(|c| {
                xv[c * hw..(c + 1) * hw]
                    .iter()
                    .map(|v| v.abs().powf(self.p))
                    .sum::<f64>()
                    .powf(1.0 / self.p)
            })
            .collect();
        let mut shape = xs[..2].to_vec();
        shape.extend(vec![1; xs.len() - 2]);
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// MaxUnpool: scatters values to their MaxPool indices.
#[derive(Debug)]
struct MaxUnpool {
    kernel: Vec<i64>,
    strides: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
}

pub(crate) fn build_max_unpool(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    Ok(Op::Dyn(DynOp::new(MaxUnpool {
        kernel: a
            .ints("kernel_shape")?
            .ok_or_else(|| Error::InvalidModel("MaxUnpool needs 'kernel_shape'".into()))?,
        strides: a.ints("strides")?,
        pads: a.ints("pads")?,
    })))
}

impl MaxUnpool {
    fn inferred(&self, xs: &[usize]) -> Result<Vec<usize>> {
        const OP: &str = "MaxUnpool";
        let n = self.kernel.len();
        if xs.len() != n + 2 {
            return metal_mps_ir::invalid!("{OP}: input of rank {} for {n} kernel axes", xs.len());
        }
        let strides = per_axis(OP, "strides", self.strides.clone(), n, 1)?;
        let pads = per_axis(OP, "pads", self.pads.clone(), 2 * n, 0)?;
        let mut s = xs[..2].to_vec();
        for a in 0..n {
            let d = (xs[a + 2] as i64 - 1) * strides[a] - pads[a] - pads[a + n] + self.kernel[a];
            if d < 0 {
                return metal_mps_ir::invalid!("{OP}: negative output size on axis {a}");
            }
            s.push(d as usize);
        }
        Ok(s)
    }
}

impl Operator for MaxUnpool {
    fn name(&self) -> &str {
        "MaxUnpool"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let rank = x.shape.map(|s| s.len());
        if let Some(os) = ins.get(2).and_then(|k| k.as_ref()) {
            if let Some(v) = crate::support::const_ints(Some(os)) {
                return Ok(vec![(
                    x.dtype,
                    Some(v.iter().map(|&d| Dim::Fixed(d.max(0) as usize)).collect()),
                )]);
            }
            return Ok(vec![(x.dtype, unknown_dims(rank))]);
        }
        let shape = match x.shape.and_then(fixed_shape) {
            Some(s) => Some(from_fixed(&self.inferred(&s)?)),
            None => unknown_dims(rank),
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "MaxUnpool";
        let (x, ind) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let inf = self.inferred(x.shape())?;
        let target: Vec<usize> = match opt(inputs, 2) {
            Some(t) => t
                .to_i64_vec()?
                .iter()
                .map(|&d| {
                    usize::try_from(d)
                        .map_err(|_| Error::Invalid(format!("{OP}: negative output_shape")))
                })
                .collect::<Result<_>>()?,
            None => inf.clone(),
        };
        if target.len() != inf.len() {
            return metal_mps_ir::invalid!("{OP}: output_shape {target:?} has the wrong rank");
        }
        if ind.numel() != x.numel() {
            return metal_mps_ir::invalid!(
                "{OP}: indices {:?} and input {:?} differ",
                ind.shape(),
                x.shape()
            );
        }
        let n_inf = checked_numel(&inf)?;
        let n_out = checked_numel(&target)?;
        let xv = values(x)?;
        let iv = ind.to_i64_vec()?;
        let mut y = zeros(n_inf)?;
        for (&i, &v) in iv.iter().zip(&xv) {
            let i = usize::try_from(i)
                .ok()
                .filter(|&i| i < n_inf)
                .ok_or_else(|| {
                    Error::Invalid(format!("{OP}: index {i} out of range for {inf:?}"))
                })?;
            y[i] = v;
        }
        // The unpooled tensor in the top-left corner of the requested shape.
        let res = if target == inf {
            y
        } else {
            let mut r = zeros(n_out)?;
            let rank = inf.len();
            let mut idx = vec![0usize; rank];
            let tstr = metal_mps_ir::strides(&target);
            for &v in y.iter() {
                if idx.iter().zip(&target).all(|(&i, &t)| i < t) {
                    let off: usize = idx.iter().zip(&tstr).map(|(a, b)| a * b).sum();
                    r[off] = v;
                }
                for a in (0..rank).rev() {
                    idx[a] += 1;
                    if idx[a] < inf[a] {
                        break;
                    }
                    idx[a] = 0;
                }
            }
            r
        };
        Ok(vec![store(out, 0, x.dtype(), target, &res)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// MaxRoiPool: max over each bin of each region (Caffe's ROI pooling).
#[derive(Debug)]
struct MaxRoiPool {
    pooled: Vec<usize>,
    scale: f64,
}

pub(crate) fn build_max_roi_pool(cx: &BuildCx) -> Result<Op> {
    let pooled = cx
        .attrs
        .sizes("pooled_shape")?
        .ok_or_else(|| Error::InvalidModel("MaxRoiPool needs 'pooled_shape'".into()))?;
    if pooled.len() != 2 {
        return metal_mps_ir::invalid!("MaxRoiPool: pooled_shape must have 2 values");
    }
    Ok(Op::Dyn(DynOp::new(MaxRoiPool {
        pooled,
        scale: cx.attrs.float("spatial_scale", 1.0)? as f64,
    })))
}

impl Operator for MaxRoiPool {
    fn name(&self) -> &str {
        "MaxRoiPool"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, r) = (known(ins, 0)?, known(ins, 1)?);
        check_float("MaxRoiPool", x.dtype)?;
        let c = x
            .shape
            .and_then(|s| s.get(1).cloned())
            .unwrap_or(Dim::Unknown);
        let n = r
            .shape
            .and_then(|s| s.first().cloned())
            .unwrap_or(Dim::Unknown);
        Ok(vec![(
            x.dtype,
            Some(vec![
                n,
                c,
                Dim::Fixed(self.pooled[0]),
                Dim::Fixed(self.pooled[1]),
            ]),
        )])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "MaxRoiPool";
        let (x, rois) = (arg(inputs, 0)?, arg(inputs, 1)?);
        check_float(OP, x.dtype())?;
        let xs = x.shape();
        if xs.len() != 4 || rois.rank() != 2 || rois.shape()[1] != 5 {
            return metal_mps_ir::invalid!(
                "{OP}: input {xs:?} and rois {:?} (want 4-D and [R, 5])",
                rois.shape()
            );
        }
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let (ph, pw) = (self.pooled[0], self.pooled[1]);
        let nr = rois.shape()[0];
        let shape = vec![nr, c, ph, pw];
        let mut y = zeros(checked_numel(&shape)?)?;
        let xv = values(x)?;
        let rv = rois.to_f64_vec();
        for r in 0..nr {
            let roi = &rv[r * 5..r * 5 + 5];
            let b = roi[0];
            if !(b >= 0.0 && (b as usize) < n) {
                return metal_mps_ir::invalid!("{OP}: batch index {b} out of range");
            }
            let b = b as usize;
            let sw = (roi[1] * self.scale).round() as i64;
            let sh = (roi[2] * self.scale).round() as i64;
            let ew = (roi[3] * self.scale).round() as i64;
            let eh = (roi[4] * self.scale).round() as i64;
            let rh = (eh - sh + 1).max(1) as f64;
            let rw = (ew - sw + 1).max(1) as f64;
            let (bh, bw) = (rh / ph as f64, rw / pw as f64);
            for ci in 0..c {
                let plane = &xv[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
                for i in 0..ph {
                    let hs = ((i as f64 * bh).floor() as i64 + sh).clamp(0, h as i64) as usize;
                    let he = (((i + 1) as f64 * bh).ceil() as i64 + sh).clamp(0, h as i64) as usize;
                    for j in 0..pw {
                        let ws = ((j as f64 * bw).floor() as i64 + sw).clamp(0, w as i64) as usize;
                        let we =
                            (((j + 1) as f64 * bw).ceil() as i64 + sw).clamp(0, w as i64) as usize;
                        let mut m = f64::NEG_INFINITY;
                        for yy in hs..he {
                            for xx in ws..we {
                                m = m.max(plane[yy * w + xx]);
                            }
                        }
                        y[((r * c + ci) * ph + i) * pw + j] =
                            if he <= hs || we <= ws { 0.0 } else { m };
                    }
                }
            }
        }
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
