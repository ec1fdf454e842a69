//! ConvTranspose (1-D, 2-D, 3-D, ...): per group a product of the transposed
//! weights with the input (the built-in MatMul), then a col2im scatter-add.

use super::common::{auto_pad, per_axis, AutoPad};
use crate::support::{arg, check_float, check_same, known, opt};
use crate::BuildCx;
use metal_mps_cpu::Spread;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor,
};
use rayon::prelude::*;
use std::any::Any;

#[derive(Debug)]
struct ConvTranspose {
    auto: AutoPad,
    kernel: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    output_padding: Option<Vec<i64>>,
    output_shape: Option<Vec<i64>>,
    group: i64,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let group = a.int("group", 1)?;
    if group < 1 {
        return metal_mps_ir::invalid!("ConvTranspose: group must be positive, got {group}");
    }
    Ok(Op::Dyn(DynOp::new(ConvTranspose {
        auto: auto_pad("ConvTranspose", a.string("auto_pad")?)?,
        kernel: a.ints("kernel_shape")?,
        strides: a.ints("strides")?,
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        output_padding: a.ints("output_padding")?,
        output_shape: a.ints("output_shape")?,
        group,
    })))
}

/// The resolved geometry along the spatial axes.
struct Geometry {
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Begin pads.
    pads: Vec<i64>,
    out: Vec<usize>,
}

impl ConvTranspose {
    fn geometry(&self, input: &[usize], kernel: &[usize]) -> Result<Geometry> {
        const OP: &str = "ConvTranspose";
        let n = input.len();
        if let Some(k) = &self.kernel {
            if k.len() != n || k.iter().zip(kernel).any(|(&a, &b)| a != b as i64) {
                return metal_mps_ir::invalid!(
                    "{OP}: kernel_shape {k:?} differs from the weights' {kernel:?}"
                );
            }
        }
        let strides = per_axis(OP, "strides", self.strides.clone(), n, 1)?;
        let dilations = per_axis(OP, "dilations", self.dilations.clone(), n, 1)?;
        let opad = per_axis(OP, "output_padding", self.output_padding.clone(), n, 0)?;
        if strides.iter().chain(&dilations).any(|&v| v < 1) {
            return metal_mps_ir::invalid!("{OP}: strides and dilations must be positive");
        }
        let pads_attr = match &self.pads {
            None => vec![0; 2 * n],
            Some(p) if p.len() == 2 * n => p.clone(),
            Some(p) => {
                return metal_mps_ir::invalid!("{OP}: pads has {} values for {n} axes", p.len())
            }
        };
        let natural = |a: usize| -> i64 {
            strides[a] * (input[a] as i64 - 1) + opad[a] + (kernel[a] as i64 - 1) * dilations[a] + 1
        };
        let output_shape: Option<Vec<i64>> = match &self.output_shape {
            None => None,
            Some(s) if s.len() == n => Some(s.clone()),
            Some(s) if s.len() == n + 2 => Some(s[2..].to_vec()),
            Some(s) => {
                return metal_mps_ir::invalid!(
                    "{OP}: output_shape has {} values for {n} axes",
                    s.len()
                )
            }
        };
        let same = matches!(self.auto, AutoPad::SameUpper | AutoPad::SameLower);
        let mut pads = vec![0i64; n];
        let mut out = vec![0usize; n];
        for a in 0..n {
            let target = match &output_shape {
                Some(s) => Some(s[a]),
                None if same => Some(input[a] as i64 * strides[a]),
                None => None,
            };
            let o = match target {
                Some(t) => {
                    let total = natural(a) - t;
                    pads[a] = if self.auto == AutoPad::SameUpper {
                        total.div_euclid(2)
                    } else {
                        total - total.div_euclid(2)
                    };
                    t
                }
                None => {
                    let (b, e) = if self.auto == AutoPad::Valid {
                        (0, 0)
                    } else {
                        (pads_attr[a], pads_attr[a + n])
                    };
                    pads[a] = b;
                    natural(a) - b - e
                }
            };
            if o < 0 {
                return metal_mps_ir::invalid!(
                    "{OP}: negative output size {o} on spatial axis {a}"
                );
            }
            out[a] = o as usize;
        }
        Ok(Geometry {
            strides,
            dilations,
            pads,
            out,
        })
    }
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    dispatch_dtype!(t.dtype(), T => {
        Ok(t.as_slice::<T>()?.iter().map(|v| v.to_f64() as f32).collect())
    })
}

impl Operator for ConvTranspose {
    fn name(&self) -> &str {
        "ConvTranspose"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, w) = (known(ins, 0)?, known(ins, 1)?);
        check_float("ConvTranspose", x.dtype)?;
        check_same("ConvTranspose", x.dtype, w.dtype)?;
        let (Some(xs), Some(ws)) = (x.shape, w.shape) else {
            let rank = x.shape.map(|s| s.len()).or(w.shape.map(|s| s.len()));
            return Ok(vec![(x.dtype, crate::support::unknown_dims(rank))]);
        };
        if xs.len() < 3 || ws.len() != xs.len() {
            return metal_mps_ir::invalid!(
                "ConvTranspose: input rank {} and weight rank {} (want equal, at least 3)",
                xs.len(),
                ws.len()
            );
        }
        let mut shape = vec![xs[0].clone()];
        shape.push(match ws[1].fixed() {
            Some(m) => Dim::Fixed(m * self.group as usize),
            None => Dim::Unknown,
        });
        // Each spatial output size depends on its own axis alone: unknown
        // input axes stay unknown.
        let ins: Vec<Option<usize>> = xs[2..].iter().map(Dim::fixed).collect();
        let k_fixed: Option<Vec<usize>> = ws[2..].iter().map(Dim::fixed).collect();
        match k_fixed {
            Some(k) if ins.iter().all(Option::is_some) => {
                let probe: Vec<usize> = ins.iter().flatten().copied().collect();
                shape.extend(
                    self.geometry(&probe, &k)?
                        .out
                        .iter()
                        .map(|&o| Dim::Fixed(o)),
                );
            }
            Some(k) => {
                // A probe size for the unknown axes (whose results are dropped).
                let probe: Vec<usize> = ins.iter().map(|d| d.unwrap_or(1 << 16)).collect();
                match self.geometry(&probe, &k) {
                    Ok(g) => shape.extend(g.out.iter().zip(&ins).map(|(&o, d)| match d {
                        Some(_) => Dim::Fixed(o),
                        None => Dim::Unknown,
                    })),
                    Err(_) => shape.extend(vec![Dim::Unknown; xs.len() - 2]),
                }
            }
            None => shape.extend(vec![Dim::Unknown; xs.len() - 2]),
        }
        Ok(vec![(x.dtype, Some(shape))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "ConvTranspose";
        let (x, w) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let b = opt(inputs, 2);
        check_float(OP, x.dtype())?;
        check_same(OP, x.dtype(), w.dtype())?;
        let (xs, ws) = (x.shape(), w.shape());
        if xs.len() < 3 || ws.len() != xs.len() {
            return metal_mps_ir::invalid!(
                "{OP}: input {xs:?} and weights {ws:?} (want equal ranks, at least 3)"
            );
        }
        let g = self.group as usize;
        let (n, c) = (xs[0], xs[1]);
        if ws[0] != c || c % g != 0 {
            return metal_mps_ir::invalid!(
                "{OP}: weights {ws:?} do not match {c} input channels in {g} groups"
            );
        }
        let (cg, mg) = (c / g, ws[1]);
        let m = mg * g;
        let geo = self.geometry(&xs[2..], &ws[2..])?;
        let kernel = &ws[2..];
        let nsp = kernel.len();
        let kprod: usize = kernel.iter().product();
        let hw_in: usize = xs[2..].iter().product();
        let mut oshape = vec![n, m];
        oshape.extend(&geo.out);
        let total = checked_numel(&oshape)?;
        let hw_out: usize = geo.out.iter().product();
        let bias = match b {
            Some(b) => {
                if b.numel() != m {
                    return metal_mps_ir::invalid!(
                        "{OP}: bias has {} values for {m} output channels",
                        b.numel()
                    );
                }
                to_f32(b)?
            }
            None => vec![0.0; m],
        };
        // A[g] = W[g]^T: (mg*kprod) x cg.
        let wv = to_f32(w)?;
        let rows = mg * kprod;
        let mut at = vec![0f32; g * rows * cg];
        for gi in 0..g {
            for ci in 0..cg {
                let src = &wv[(gi * cg + ci) * rows..(gi * cg + ci + 1) * rows];
                for (r, &v) in src.iter().enumerate() {
                    at[(gi * rows + r) * cg + ci] = v;
                }
            }
        }
        let a = Tensor::from_vec(vec![g, rows, cg], at)?;
        let xb = Tensor::from_vec(vec![n, g, cg, hw_in], to_f32(x)?)?;
        let cols = metal_mps_cpu::eval_op(
            &Op::MatMul {
                activation: Default::default(),
            },
            &[Some(&a), Some(&xb)],
            1,
            &mut Out::fresh(),
        )?;
        let cols = cols
            .into_iter()
            .next()
            .ok_or_else(|| metal_mps_ir::Error::Invalid(format!("{OP}: no product")))?;
        let cols = cols.as_slice::<f32>()?;
        // Per axis: for kernel tap k and input position i, the output position (or none).
        let tables: Vec<Vec<i64>> = (0..nsp)
            .map(|a| {
                let iw = xs[2 + a];
                let mut t = Vec::with_capacity(kernel[a] * iw);
                for k in 0..kernel[a] {
                    for i in 0..iw {
                        let o =
                            i as i64 * geo.strides[a] + k as i64 * geo.dilations[a] - geo.pads[a];
                        t.push(if o >= 0 && o < geo.out[a] as i64 {
                            o
                        } else {
                            -1
                        });
                    }
                }
                t
            })
            .collect();
        let mut ostr = vec![1usize; nsp];
        for a in (0..nsp.saturating_sub(1)).rev() {
            ostr[a] = ostr[a + 1] * geo.out[a + 1];
        }
        let mut y: Vec<f32> = Vec::new();
        y.try_reserve_exact(total)
            .map_err(|_| metal_mps_ir::Error::OutOfMemory { bytes: total * 4 })?;
        y.resize(total, 0.0);
        if hw_out > 0 {
            y.par_chunks_mut(hw_out)
                .enumerate()
                .spread()
                .for_each(|(nm, dst)| {
                    let (ni, mi) = (nm / m, nm % m);
                    let (gi, mgi) = (mi / mg, mi % mg);
                    dst.iter_mut().for_each(|v| *v = bias[mi]);
                    let base = ((ni * g + gi) * rows + mgi * kprod) * hw_in;
                    let mut kidx = vec![0usize; nsp];
                    let mut iidx = vec![0usize; nsp];
                    for kk in 0..kprod {
                        let row = &cols[base + kk * hw_in..base + (kk + 1) * hw_in];
                        iidx.iter_mut().for_each(|v| *v = 0);
                        let last = nsp - 1;
                        let (tl, iwl) = (&tables[last], xs[2 + last]);
                        let mut p = 0;
                        while p < hw_in {
                            // Offset from the leading axes.
                            let mut off = 0usize;
                            let mut ok = true;
                            for a in 0..last {
                                let o = tables[a][kidx[a] * xs[2 + a] + iidx[a]];
                                if o < 0 {
                                    ok = false;
                                    break;
                                }
                                off += o as usize * ostr[a];
                            }
                            if ok {
                                let tr = &tl[kidx[last] * iwl..(kidx[last] + 1) * iwl];
                                for (i, &o) in tr.iter().enumerate() {
                                    if o >= 0 {
                                        dst[off + o as usize] += row[p + i];
                                    }
                                }
                            }
                            p += iwl;
                            // Advance the leading axes of the input position.
                            for a in (0..last).rev() {
                                iidx[a] += 1;
                                if iidx[a] < xs[2 + a] {
                                    break;
                                }
                                iidx[a] = 0;
                            }
                        }
                        for a in (0..nsp).rev() {
                            kidx[a] += 1;
                            if kidx[a] < kernel[a] {
                                break;
                            }
                            kidx[a] = 0;
                        }
                    }
                });
        }
        let mut t = out.tensor(0, x.dtype(), oshape)?;
        dispatch_dtype!(x.dtype(), T => {
            for (o, &v) in t.as_slice_mut::<T>()?.iter_mut().zip(&y) {
                *o = T::from_f64(v as f64);
            }
        });
        Ok(vec![t])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
