//! GridSample (opsets 16, 20; 2-D and N-D) and AffineGrid (20).

use super::common::{store, values, zeros};
use crate::support::{arg, check_float, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{checked_numel, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

pub fn build_grid_sample(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let default_mode = if cx.opset >= 20 { "linear" } else { "bilinear" };
    let mode = match a.str_or("mode", default_mode)?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => return metal_mps_ir::invalid!("GridSample: unknown mode '{other}'"),
    };
    let padding = match a.str_or("padding_mode", "zeros")?.as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => return metal_mps_ir::invalid!("GridSample: unknown padding_mode '{other}'"),
    };
    Ok(Op::Dyn(DynOp::new(GridSample {
        mode,
        padding,
        align_corners: a.flag("align_corners", false)?,
    })))
}

fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng) as i64;
        let r = dx - n as f64 * rng;
        if n % 2 == 0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng) as i64;
        let r = dx - n as f64 * rng;
        if n % 2 == 0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

fn cubic_coeffs(t: f64) -> [f64; 4] {
    let a = -0.75;
    let x = t.abs();
    [
        ((a * (x + 1.0) - 5.0 * a) * (x + 1.0) + 8.0 * a) * (x + 1.0) - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * (1.0 - x) - (a + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0,
        ((a * (2.0 - x) - 5.0 * a) * (2.0 - x) + 8.0 * a) * (2.0 - x) - 4.0 * a,
    ]
}

impl GridSample {
    /// The index a tap reads along an axis of size `d`, or `None` for a zero.
    fn fetch(&self, i: i64, d: usize, lo: f64, hi: f64) -> Option<usize> {
        match self.padding {
            Padding::Zeros => (i >= 0 && i < d as i64).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, d as i64 - 1) as usize),
            Padding::Reflection => {
                let r = reflect(i as f64, lo, hi) as i64;
                Some(r.clamp(0, d as i64 - 1) as usize)
            }
        }
    }
}

impl Operator for GridSample {
    fn name(&self) -> &str {
        "GridSample"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, g) = (known(ins, 0)?, known(ins, 1)?);
        check_float("GridSample", g.dtype)?;
        let shape = match (x.shape, g.shape) {
            (Some(xs), Some(gs)) if xs.len() >= 3 && gs.len() == xs.len() => {
                let mut s = vec![xs[0].clone(), xs[1].clone()];
                s.extend(gs[1..gs.len() - 1].iter().cloned());
                Some(s)
            }
            (Some(xs), _) => Some(vec![Dim::Unknown; xs.len()]),
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
        const OP: &str = "GridSample";
        let (x, g) = (arg(inputs, 0)?, arg(inputs, 1)?);
        check_float(OP, g.dtype())?;
        let (xs, gs) = (x.shape(), g.shape());
        let nd = xs.len().saturating_sub(2);
        if nd == 0 || gs.len() != xs.len() || gs[0] != xs[0] || gs[gs.len() - 1] != nd {
            return metal_mps_ir::invalid!("{OP}: input {xs:?} and grid {gs:?} do not match");
        }
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let osp = &gs[1..gs.len() - 1];
        let mut shape = vec![n, c];
        shape.extend(osp);
        let total = checked_numel(&shape)?;
        let npos: usize = osp.iter().product();
        let hw: usize = dims.iter().product();
        let xv = values(x)?;
        let gv = values(g)?;
        let mut y = zeros(total)?;
        let (lo, hi): (Vec<f64>, Vec<f64>) = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (0.0, d as f64 - 1.0)
                } else {
                    (-0.5, d as f64 - 0.5)
                }
            })
            .unzip();
        let mut dstr = vec![1usize; nd];
        for a in (0..nd.saturating_sub(1)).rev() {
            dstr[a] = dstr[a + 1] * dims[a + 1];
        }
        // Per position: the taps (offset, weight) of the tensor product.
        let mut taps: Vec<(usize, f64)> = Vec::new();
        let mut axis_taps: Vec<Vec<(Option<usize>, f64)>> = vec![Vec::with_capacity(4); nd];
        if hw == 0 {
            return Ok(vec![store(out, 0, x.dtype(), shape, &y)?]);
        }
        for b in 0..n {
            for p in 0..npos {
                let coords = &gv[(b * npos + p) * nd..(b * npos + p + 1) * nd];
                for a in 0..nd {
                    // The grid holds (x, y, z...): the last spatial axis first.
                    let v = coords[nd - 1 - a];
                    let d = dims[a] as f64;
                    let mut xf = if self.align_corners {
                        (v + 1.0) / 2.0 * (d - 1.0)
                    } else {
                        ((v + 1.0) * d - 1.0) / 2.0
                    };
                    if self.mode == Mode::Nearest {
                        xf = xf.round_ties_even();
                    }
                    // Bicubic pads each tap (as PyTorch and onnxruntime do),
                    // the other modes the sample position.
                    if self.mode != Mode::Cubic && (xf < lo[a] || xf > hi[a]) {
                        match self.padding {
                            Padding::Border => xf = xf.clamp(0.0, d - 1.0),
                            Padding::Reflection => xf = reflect(xf, lo[a], hi[a]),
                            Padding::Zeros => {}
                        }
                    }
                    let at = &mut axis_taps[a];
                    at.clear();
                    if !xf.is_finite() {
                        at.push((None, 1.0));
                        continue;
                    }
                    match self.mode {
                        Mode::Nearest => {
                            let i = xf.trunc() as i64;
                            at.push((self.fetch(i, dims[a], lo[a], hi[a]), 1.0));
                        }
                        Mode::Linear => {
                            let x0 = xf.floor();
                            let t = xf - x0;
                            let x0 = x0 as i64;
                            at.push((self.fetch(x0, dims[a], lo[a], hi[a]), 1.0 - t));
                            at.push((self.fetch(x0 + 1, dims[a], lo[a], hi[a]), t));
                        }
                        Mode::Cubic => {
                            let x0 = xf.floor();
                            let cs = cubic_coeffs(xf - x0);
                            let x0 = x0 as i64;
                            for (k, &cw) in cs.iter().enumerate() {
                                at.push((self.fetch(x0 - 1 + k as i64, dims[a], lo[a], hi[a]), cw));
                            }
                        }
                    }
                }
                taps.clear();
                let count: usize = axis_taps.iter().map(Vec::len).product();
                for t in 0..count {
                    let (mut rem, mut off, mut w) = (t, 0usize, 1.0);
                    let mut zero = false;
                    for a in (0..nd).rev() {
                        let at = &axis_taps[a];
                        let k = rem % at.len();
                        rem /= at.len();
                        match at[k].0 {
                            Some(i) => off += i * dstr[a],
                            None => zero = true,
                        }
                        w *= at[k].1;
                    }
                    if !zero {
                        taps.push((off, w));
                    }
                }
                for ci in 0..c {
                    let plane = &xv[(b * c + ci) * hw..(b * c + ci + 1) * hw];
                    y[(b * c + ci) * npos + p] = taps.iter().map(|&(o, w)| w * plane[o]).sum();
                }
            }
        }
        Ok(vec![store(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct AffineGrid {
    align_corners: bool,
}

pub fn build_affine_grid(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(AffineGrid {
        align_corners: cx.attrs.flag("align_corners", false)?,
    })))
}

impl Operator for AffineGrid {
    fn name(&self) -> &str {
        "AffineGrid"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (t, s) = (known(ins, 0)?, known(ins, 1)?);
        check_float("AffineGrid", t.dtype)?;
        let shape = match crate::support::const_ints(Some(s)) {
            Some(v) if v.len() >= 3 && v.iter().all(|&d| d >= 0) => {
                let mut sh = vec![Dim::Fixed(v[0] as usize)];
                sh.extend(v[2..].iter().map(|&d| Dim::Fixed(d as usize)));
                sh.push(Dim::Fixed(v.len() - 2));
                Some(sh)
            }
            _ => s
                .shape
                .and_then(|sh| sh.first().and_then(Dim::fixed))
                .map(|len| vec![Dim::Unknown; len.saturating_sub(1)]),
        };
        Ok(vec![(t.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        const OP: &str = "AffineGrid";
        let (theta, size) = (arg(inputs, 0)?, arg(inputs, 1)?);
        check_float(OP, theta.dtype())?;
        let size = size.to_i64_vec()?;
        if size.len() < 3 || size.iter().any(|&d| d < 0) {
            return metal_mps_ir::invalid!("{OP}: size {size:?} (want [N, C, spatial...])");
        }
        let nd = size.len() - 2;
        let n = size[0] as usize;
        let sp: Vec<usize> = size[2..].iter().map(|&d| d as usize).collect();
        if theta.shape() != [n, nd, nd + 1] {
            return metal_mps_ir::invalid!(
                "{OP}: theta {:?} for size {size:?} (want [{n}, {nd}, {}])",
                theta.shape(),
                nd + 1
            );
        }
        let mut shape = vec![n];
        shape.extend(&sp);
        shape.push(nd);
        let total = checked_numel(&shape)?;
        let npos: usize = sp.iter().product();
        let tv = values(theta)?;
        let mut y = zeros(total)?;
        let base = |i: usize, d: usize| -> f64 {
            if self.align_corners {
                if d <= 1 {
                    -1.0
                } else {
                    -1.0 + 2.0 * i as f64 / (d - 1) as f64
                }
            } else {
                -1.0 + (2 * i + 1) as f64 / d as f64
            }
        };
        let mut idx = vec![0usize; nd];
        let mut h = vec![0.0; nd + 1];
        for p in 0..npos {
            // Homogeneous (x, y, z..., 1): the last spatial axis first.
            for a in 0..nd {
                h[nd - 1 - a] = base(idx[a], sp[a]);
            }
            h[nd] = 1.0;
            for b in 0..n {
                let th = &tv[b * nd * (nd + 1)..(b + 1) * nd * (nd + 1)];
                for r in 0..nd {
                    y[(b * npos + p) * nd + r] =
                        (0..=nd).map(|k| th[r * (nd + 1) + k] * h[k]).sum();
                }
            }
            for a in (0..nd).rev() {
                idx[a] += 1;
                if idx[a] < sp[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        Ok(vec![store(out, 0, theta.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
