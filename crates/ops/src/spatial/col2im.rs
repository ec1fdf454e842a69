//! Col2Im (opset 18) and DeformConv (opset 19): the sliding-block
//! rearrangement and the deformable convolution (N-D, bilinear sampling).

use super::common::{per_axis, store, values, zeros};
use crate::support::{arg, check_float, check_same, known, opt, unknown_dims};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{checked_numel, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct Col2Im {
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

pub fn build_col2im(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    Ok(Op::Dyn(DynOp::new(Col2Im {
        dilations: a.ints("dilations")?,
        pads: a.ints("pads")?,
        strides: a.ints("strides")?,
    })))
}

impl Operator for Col2Im {
    fn name(&self) -> &str {
        "Col2Im"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let image = crate::support::const_ints(ins.get(1).and_then(|k| k.as_ref()));
        let block = crate::support::const_ints(ins.get(2).and_then(|k| k.as_ref()));
        let shape = match (x.shape, image, block) {
            (Some(xs), Some(im), Some(bl)) if xs.len() == 3 && im.iter().all(|&d| d >= 0) => {
                let kprod: i64 = bl.iter().product();
                let c = match xs[1].fixed() {
                    Some(ck) if kprod > 0 => Dim::Fixed(ck / kprod as usize),
                    _ => Dim::Unknown,
                };
                let mut s = vec![xs[0].clone(), c];
                s.extend(im.iter().map(|&d| Dim::Fixed(d as usize)));
                Some(s)
            }
            (_, Some(im), _) => unknown_dims(Some(im.len() + 2)),
            _ => None,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "Col2Im";
        let x = arg(inputs, 0)?;
        let image = arg(inputs, 1)?.to_i64_vec()?;
        let block = arg(inputs, 2)?.to_i64_vec()?;
        let nd = image.len();
        if nd == 0
            || block.len() != nd
            || x.rank() != 3
            || image.iter().chain(&block).any(|&d| d < 1)
        {
            return metal_mps_ir::invalid!(
                "{OP}: input {:?}, image_shape {image:?}, block_shape {block:?}",
                x.shape()
            );
        }
        let dil = per_axis(OP, "dilations", self.dilations.clone(), nd, 1)?;
        let strides = per_axis(OP, "strides", self.strides.clone(), nd, 1)?;
        let pads = per_axis(OP, "pads", self.pads.clone(), 2 * nd, 0)?;
        if dil.iter().chain(&strides).any(|&v| v < 1) {
            return metal_mps_ir::invalid!("{OP}: strides and dilations must be positive");
        }
        let bl: Vec<usize> = block.iter().map(|&k| k as usize).collect();
        let kprod = checked_numel(&bl)?;
        let (n, ck, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if ck % kprod != 0 {
            return metal_mps_ir::invalid!(
                "{OP}: {ck} rows are not a multiple of the block size {kprod}"
            );
        }
        let c = ck / kprod;
        let mut nb = Vec::with_capacity(nd);
        for a in 0..nd {
            let v = (image[a] + pads[a] + pads[a + nd] - dil[a] * (block[a] - 1) - 1)
                .div_euclid(strides[a])
                + 1;
            if v < 1 {
                return metal_mps_ir::invalid!("{OP}: no sliding block fits along axis {a}");
            }
            nb.push(v as usize);
        }
        if nb.iter().product::<usize>() != l {
            return metal_mps_ir::invalid!("{OP}: {l} columns, but the geometry has {nb:?} blocks");
        }
        let im: Vec<usize> = image.iter().map(|&d| d as usize).collect();
        let mut shape = vec![n, c];
        shape.extend(&im);
        let total = checked_numel(&shape)?;
        let hw: usize = im.iter().product();
        let mut istr = vec![1usize; nd];
        for a in (0..nd - 1).rev() {
            istr[a] = istr[a + 1] * im[a + 1];
        }
        let xv = values(x)?;
        let mut y = zeros(total)?;
        let mut k = vec![0usize; nd];
        let mut bpos = vec![0usize; nd];
        for kk in 0..kprod {
            bpos.iter_mut().for_each(|v| *v = 0);
            for p in 0..l {
                let mut off = 0usize;
                let mut inside = true;
                for a in 0..nd {
                    let i = bpos[a] as i64 * strides[a] - pads[a] + k[a] as i64 * dil[a];
                    if i < 0 || i >= image[a] {
                        inside = false;
                        break;
                    }
                    off += i as usize * istr[a];
                }
                if inside {
                    for b in 0..n {
                        for ci in 0..c {
                            y[(b * c + ci) * hw + off] += xv[(b * ck + ci * kprod + kk) * l + p];
                        }
                    }
                }
                for a in (0..nd).rev() {
                    bpos[a] += 1;
                    if bpos[a] < nb[a] {
                        break;
                    }
                    bpos[a] = 0;
                }
            }
            for a in (0..nd).rev() {
                k[a] += 1;
                if k[a] < block[a] as usize {
                    break;
                }
                k[a] = 0;
            }
        }
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct DeformConv {
    dilations: Option<Vec<i64>>,
    group: usize,
    kernel: Option<Vec<i64>>,
    offset_group: usize,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

pub fn build_deform_conv(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let pos = |n: &str| -> Result<usize> {
        let v = a.int(n, 1)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            Error::InvalidModel(format!("DeformConv: {n} must be positive, got {v}"))
        })
    };
    Ok(Op::Dyn(DynOp::new(DeformConv {
        dilations: a.ints("dilations")?,
        group: pos("group")?,
        kernel: a.ints("kernel_shape")?,
        offset_group: pos("offset_group")?,
        pads: a.ints("pads")?,
        strides: a.ints("strides")?,
    })))
}

impl Operator for DeformConv {
    fn name(&self) -> &str {
        "DeformConv"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, w, off) = (known(ins, 0)?, known(ins, 1)?, known(ins, 2)?);
        check_float("DeformConv", x.dtype)?;
        let shape = match (x.shape, w.shape, off.shape) {
            (Some(xs), Some(ws), Some(os)) if os.len() == xs.len() && xs.len() >= 3 => {
                let mut s = vec![xs[0].clone(), ws[0].clone()];
                s.extend(os[2..].iter().cloned());
                Some(s)
            }
            (Some(xs), _, _) => unknown_dims(Some(xs.len())),
            _ => None,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "DeformConv";
        let (x, w, offset) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let (bias, mask) = (opt(inputs, 3), opt(inputs, 4));
        check_float(OP, x.dtype())?;
        check_same(OP, x.dtype(), w.dtype())?;
        let (xs, ws, os) = (x.shape(), w.shape(), offset.shape());
        let nd = xs.len().saturating_sub(2);
        if nd == 0 || ws.len() != xs.len() || os.len() != xs.len() {
            return metal_mps_ir::invalid!("{OP}: input {xs:?}, weights {ws:?}, offset {os:?}");
        }
        let (n, ic, oc) = (xs[0], xs[1], ws[0]);
        let (g, og) = (self.group, self.offset_group);
        let kernel: Vec<usize> = ws[2..].to_vec();
        if let Some(k) = &self.kernel {
            if k.len() != nd || k.iter().zip(&kernel).any(|(&a, &b)| a != b as i64) {
                return metal_mps_ir::invalid!(
                    "{OP}: kernel_shape {k:?} differs from the weights' {kernel:?}"
                );
            }
        }
        let icg = ws[1];
        if ic != icg * g || oc % g != 0 || ic % og != 0 {
            return metal_mps_ir::invalid!(
                "{OP}: input {xs:?} and weights {ws:?} do not fit group {g}, offset_group {og}"
            );
        }
        let ocg = oc / g;
        let icog = ic / og;
        let kprod: usize = kernel.iter().product();
        let osp = &os[2..];
        let npos: usize = osp.iter().product();
        if os[0] != n || os[1] != og * kprod * nd {
            return metal_mps_ir::invalid!(
                "{OP}: offset {os:?} (want [{n}, {}, ...])",
                og * kprod * nd
            );
        }
        if let Some(m) = mask {
            let mut want = vec![n, og * kprod];
            want.extend(osp);
            if m.shape() != want.as_slice() {
                return metal_mps_ir::invalid!("{OP}: mask {:?} (want {want:?})", m.shape());
            }
        }
        let dil = per_axis(OP, "dilations", self.dilations.clone(), nd, 1)?;
        let strides = per_axis(OP, "strides", self.strides.clone(), nd, 1)?;
        let pads = per_axis(OP, "pads", self.pads.clone(), 2 * nd, 0)?;
        let isp = &xs[2..];
        let hw: usize = isp.iter().product();
        let mut istr = vec![1usize; nd];
        for a in (0..nd - 1).rev() {
            istr[a] = istr[a + 1] * isp[a + 1];
        }
        let mut shape = vec![n, oc];
        shape.extend(osp);
        let total = checked_numel(&shape)?;
        let cols_len = (ic * kprod)
            .checked_mul(npos)
            .ok_or_else(|| Error::Invalid(format!("{OP}: too large")))?;
        let xv = values(x)?;
        let wv = values(w)?;
        let ov = values(offset)?;
        let mv = mask.map(values).transpose()?;
        let bv = match bias {
            Some(b) if b.numel() == oc => values(b)?,
            Some(b) => {
                return metal_mps_ir::invalid!(
                    "{OP}: bias has {} values for {oc} channels",
                    b.numel()
                )
            }
            None => vec![0.0; oc],
        };
        let mut y = zeros(total)?;
        let mut cols = zeros(cols_len)?;
        let mut k = vec![0usize; nd];
        let mut o = vec![0usize; nd];
        let mut taps: Vec<(usize, f64)> = Vec::with_capacity(1 << nd);
        for b in 0..n {
            cols.iter_mut().for_each(|v| *v = 0.0);
            for gi in 0..og {
                k.iter_mut().for_each(|v| *v = 0);
                for kk in 0..kprod {
                    o.iter_mut().for_each(|v| *v = 0);
                    for p in 0..npos {
                        // The sample position and its bilinear taps (zeros outside).
                        taps.clear();
                        taps.push((0, 1.0));
                        for a in 0..nd {
                            let oi = (((b * og + gi) * kprod + kk) * nd + a) * npos + p;
                            let pos = o[a] as f64 * strides[a] as f64 - pads[a] as f64
                                + (k[a] as i64 * dil[a]) as f64
                                + ov[oi];
                            let f = pos.floor();
                            let t = pos - f;
                            let f = f as i64;
                            let cur = std::mem::take(&mut taps);
                            for (i, wt) in [(f, 1.0 - t), (f + 1, t)] {
                                if i < 0 || i >= isp[a] as i64 || !pos.is_finite() {
                                    continue;
                                }
                                for &(off, w0) in &cur {
                                    taps.push((off + i as usize * istr[a], w0 * wt));
                                }
                            }
                        }
                        let m = match &mv {
                            Some(m) => m[((b * og + gi) * kprod + kk) * npos + p],
                            None => 1.0,
                        };
                        for ci in gi * icog..(gi + 1) * icog {
                            let plane = &xv[(b * ic + ci) * hw..(b * ic + ci + 1) * hw];
                            let v: f64 = taps.iter().map(|&(off, wt)| wt * plane[off]).sum();
                            cols[(ci * kprod + kk) * npos + p] = v * m;
                        }
                        for a in (0..nd).rev() {
                            o[a] += 1;
                            if o[a] < osp[a] {
                                break;
                            }
                            o[a] = 0;
                        }
                    }
                    for a in (0..nd).rev() {
                        k[a] += 1;
                        if k[a] < kernel[a] {
                            break;
                        }
                        k[a] = 0;
                    }
                }
            }
            // y[b, oc] = W[oc] . cols[group rows] + bias.
            for oci in 0..oc {
                let gi = oci / ocg;
                let dst = &mut y[(b * oc + oci) * npos..(b * oc + oci + 1) * npos];
                dst.iter_mut().for_each(|v| *v = bv[oci]);
                for r in 0..icg * kprod {
                    let wt = wv[oci * icg * kprod + r];
                    if wt == 0.0 {
                        continue;
                    }
                    let row = (gi * icg) * kprod + r;
                    let src = &cols[row * npos..(row + 1) * npos];
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += wt * s);
                }
            }
        }
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
