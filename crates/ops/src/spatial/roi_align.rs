//! RoiAlign (opsets 10 and 16): bilinear samples averaged (or maxed) per bin.

use super::common::{store, values, zeros};
use crate::support::{arg, check_float, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{checked_numel, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct RoiAlign {
    half_pixel: bool,
    max: bool,
    out_h: usize,
    out_w: usize,
    sampling_ratio: i64,
    scale: f64,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let default_ctm = if cx.opset >= 16 {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let half_pixel = match a
        .str_or("coordinate_transformation_mode", default_ctm)?
        .as_str()
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        other => {
            return metal_mps_ir::invalid!(
                "RoiAlign: unknown coordinate_transformation_mode '{other}'"
            )
        }
    };
    let max = match a.str_or("mode", "avg")?.as_str() {
        "avg" => false,
        "max" => true,
        other => return metal_mps_ir::invalid!("RoiAlign: unknown mode '{other}'"),
    };
    let dim = |n: &str| -> Result<usize> {
        let v = a.int(n, 1)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            metal_mps_ir::Error::InvalidModel(format!("RoiAlign: {n} must be positive"))
        })
    };
    Ok(Op::Dyn(DynOp::new(RoiAlign {
        half_pixel,
        max,
        out_h: dim("output_height")?,
        out_w: dim("output_width")?,
        sampling_ratio: a.int("sampling_ratio", 0)?,
        scale: a.float("spatial_scale", 1.0)? as f64,
    })))
}

/// One bilinear sample: four positions and weights.
#[derive(Clone, Copy, Default)]
struct Sample {
    pos: [usize; 4],
    w: [f64; 4],
}

fn sample(h: usize, w: usize, y: f64, x: f64) -> Sample {
    let (hf, wf) = (h as f64, w as f64);
    if y < -1.0 || y > hf || x < -1.0 || x > wf {
        return Sample::default();
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut yl, mut xl) = (y as usize, x as usize);
    let (yh, xh);
    if yl >= h - 1 {
        yl = h - 1;
        yh = yl;
        y = yl as f64;
    } else {
        yh = yl + 1;
    }
    if xl >= w - 1 {
        xl = w - 1;
        xh = xl;
        x = xl as f64;
    } else {
        xh = xl + 1;
    }
    let (ly, lx) = (y - yl as f64, x - xl as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        pos: [yl * w + xl, yl * w + xh, yh * w + xl, yh * w + xh],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

impl Operator for RoiAlign {
    fn name(&self) -> &str {
        "RoiAlign"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, r) = (known(ins, 0)?, known(ins, 1)?);
        check_float("RoiAlign", x.dtype)?;
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
            Some(vec![n, c, Dim::Fixed(self.out_h), Dim::Fixed(self.out_w)]),
        )])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "RoiAlign";
        let (x, rois, bi) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        check_float(OP, x.dtype())?;
        let xs = x.shape();
        if xs.len() != 4 || rois.rank() != 2 || rois.shape()[1] != 4 {
            return metal_mps_ir::invalid!(
                "{OP}: input {xs:?} and rois {:?} (want 4-D and [R, 4])",
                rois.shape()
            );
        }
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let nr = rois.shape()[0];
        let batch = bi.to_i64_vec()?;
        if batch.len() != nr {
            return metal_mps_ir::invalid!("{OP}: {} batch indices for {nr} rois", batch.len());
        }
        let (ph, pw) = (self.out_h, self.out_w);
        let shape = vec![nr, c, ph, pw];
        let mut y = zeros(checked_numel(&shape)?)?;
        let xv = values(x)?;
        let rv = rois.to_f64_vec();
        let off = if self.half_pixel { 0.5 } else { 0.0 };
        for r in 0..nr {
            let b = usize::try_from(batch[r])
                .ok()
                .filter(|&b| b < n)
                .ok_or_else(|| {
                    metal_mps_ir::Error::Invalid(format!(
                        "{OP}: batch index {} out of range",
                        batch[r]
                    ))
                })?;
            if h == 0 || w == 0 {
                continue;
            }
            let roi = &rv[r * 4..r * 4 + 4];
            let sw = roi[0] * self.scale - off;
            let sh = roi[1] * self.scale - off;
            let ew = roi[2] * self.scale - off;
            let eh = roi[3] * self.scale - off;
            let (mut rw, mut rh) = (ew - sw, eh - sh);
            if !self.half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            let (bh, bw) = (rh / ph as f64, rw / pw as f64);
            let grid = |v: f64| -> usize {
                if self.sampling_ratio > 0 {
                    self.sampling_ratio as usize
                } else {
                    v.ceil().clamp(0.0, 1e6) as usize
                }
            };
            let (gh, gw) = (grid(rh / ph as f64), grid(rw / pw as f64));
            let nsamples = [ph, pw, gh, gw]
                .iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .filter(|&v| v <= 1 << 28)
                .ok_or_else(|| {
                    metal_mps_ir::Error::Invalid(format!("{OP}: region {r} needs too many samples"))
                })?;
            let count = (gh * gw).max(1) as f64;
            let mut samples = Vec::with_capacity(nsamples);
            for i in 0..ph {
                for j in 0..pw {
                    for iy in 0..gh {
                        let yy = sh + i as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let xx = sw + j as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            samples.push(sample(h, w, yy, xx));
                        }
                    }
                }
            }
            let per = gh * gw;
            for ci in 0..c {
                let plane = &xv[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
                for bin in 0..ph * pw {
                    let ss = &samples[bin * per..(bin + 1) * per];
                    let v = if self.max {
                        let mut m: Option<f64> = None;
                        for s in ss {
                            let v = (0..4)
                                .map(|k| s.w[k] * plane[s.pos[k]])
                                .fold(f64::NEG_INFINITY, f64::max);
                            m = Some(m.map_or(v, |m: f64| m.max(v)));
                        }
                        m.unwrap_or(0.0)
                    } else {
                        ss.iter()
                            .map(|s| (0..4).map(|k| s.w[k] * plane[s.pos[k]]).sum::<f64>())
                            .sum::<f64>()
                            / count
                    };
                    y[(r * c + ci) * ph * pw + bin] = v;
                }
            }
        }
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
