//! Resize (opsets 10, 11, 13, 18, 19) and the deprecated Upsample (7, 9).
//!
//! The resize is separable: each resized axis is interpolated in turn (in f64)
//! with per-output-position taps computed as the ONNX reference does.

use super::common::{store, values, zeros};
use crate::support::{arg, known, known_opt, opt, unknown_dims};
use crate::BuildCx;
use metal_mps_cpu::Spread;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, fixed_shape, from_fixed, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor,
};
use rayon::prelude::*;
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ctm {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    /// Opset 10's tf_half_pixel_for_nn (opset 11-12 only).
    TfHalfPixelForNn,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Resize-10 and Upsample: floor when upsampling, ceil when downsampling.
    Simple,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where the scales/sizes come from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// Upsample-7: the `scales` attribute.
    Attr(Vec<f32>),
    /// Upsample-9 and Resize-10: scales as input 1.
    Scales,
    /// Resize-11+: roi (1), scales (2), sizes (3).
    Full,
}

#[derive(Debug)]
struct Resize {
    name: &'static str,
    source: Source,
    mode: Mode,
    ctm: Ctm,
    nearest: Nearest,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
}

pub fn build_upsample(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let mode = match a.str_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        other => return metal_mps_ir::invalid!("Upsample: unknown mode '{other}'"),
    };
    let source = if cx.opset < 9 {
        let s = a
            .floats("scales")?
            .ok_or_else(|| metal_mps_ir::Error::InvalidModel("Upsample needs 'scales'".into()))?;
        Source::Attr(s)
    } else {
        Source::Scales
    };
    Ok(Op::Dyn(DynOp::new(Resize {
        name: "Upsample",
        source,
        mode,
        ctm: Ctm::Asymmetric,
        nearest: Nearest::Simple,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
    })))
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let mode = match a.str_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" => Mode::Linear,
        "cubic" if cx.opset >= 11 => Mode::Cubic,
        other => return metal_mps_ir::invalid!("Resize: unknown mode '{other}'"),
    };
    if cx.opset < 11 {
        return Ok(Op::Dyn(DynOp::new(Resize {
            name: "Resize",
            source: Source::Scales,
            mode,
            ctm: Ctm::Asymmetric,
            nearest: Nearest::Simple,
            cubic_a: -0.75,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            policy: Policy::Stretch,
        })));
    }
    let ctm = match a
        .str_or("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => Ctm::HalfPixel,
        "half_pixel_symmetric" => Ctm::HalfPixelSymmetric,
        "pytorch_half_pixel" => Ctm::PytorchHalfPixel,
        "align_corners" => Ctm::AlignCorners,
        "asymmetric" => Ctm::Asymmetric,
        "tf_crop_and_resize" => Ctm::TfCropAndResize,
        "tf_half_pixel_for_nn" if cx.opset < 13 => Ctm::TfHalfPixelForNn,
        other => {
            return metal_mps_ir::invalid!(
                "Resize: unknown coordinate_transformation_mode '{other}'"
            )
        }
    };
    let nearest = match a.str_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        other => return metal_mps_ir::invalid!("Resize: unknown nearest_mode '{other}'"),
    };
    let policy = match a.str_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        other => {
            return metal_mps_ir::invalid!("Resize: unknown keep_aspect_ratio_policy '{other}'")
        }
    };
    let antialias = a.flag("antialias", false)?;
    Ok(Op::Dyn(DynOp::new(Resize {
        name: "Resize",
        source: Source::Full,
        mode,
        ctm,
        nearest,
        cubic_a: a.float("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: a.flag("exclude_outside", false)?,
        extrapolation: a.float("extrapolation_value", 0.0)? as f64,
        // Antialiasing only changes downsampling by linear or cubic filters.
        antialias: antialias && mode != Mode::Nearest,
        axes: a.ints("axes")?,
        policy,
    })))
}

/// The resize of every axis: scales, output sizes and the roi (begins then ends).
struct Plan {
    scales: Vec<f64>,
    sizes: Vec<usize>,
    roi: Option<Vec<f64>>,
}

impl Resize {
    /// The inputs as given: (roi, scales, sizes), empty tensors counting as absent.
    fn plan(
        &self,
        shape: &[usize],
        roi: Option<Vec<f64>>,
        scales: Option<Vec<f64>>,
        sizes: Option<Vec<i64>>,
    ) -> Result<Plan> {
        let name = self.name;
        let r = shape.len();
        let axes: Vec<usize> = match &self.axes {
            None => (0..r).collect(),
            Some(ax) => {
                let mut v = Vec::with_capacity(ax.len());
                for &a in ax {
                    let a = crate::support::axis(name, a, r)?;
                    if v.contains(&a) {
                        return metal_mps_ir::invalid!("{name}: axis {a} repeats in 'axes'");
                    }
                    v.push(a);
                }
                v
            }
        };
        let n = axes.len();
        let roi = match roi {
            Some(v) if self.ctm == Ctm::TfCropAndResize => {
                if v.len() != 2 * n {
                    return metal_mps_ir::invalid!(
                        "{name}: roi has {} values for {n} axes (want {})",
                        v.len(),
                        2 * n
                    );
                }
                let mut full = vec![0.0; r];
                full.extend(vec![1.0; r]);
                for (i, &d) in axes.iter().enumerate() {
                    full[d] = v[i];
                    full[r + d] = v[n + i];
                }
                Some(full)
            }
            _ if self.ctm == Ctm::TfCropAndResize => {
                return metal_mps_ir::invalid!("{name}: tf_crop_and_resize needs the roi input")
            }
            _ => None,
        };
        let (scales, sizes) = match (scales, sizes) {
            (Some(_), Some(_)) => {
                return metal_mps_ir::invalid!("{name}: only one of scales and sizes may be given")
            }
            (None, None) => return metal_mps_ir::invalid!("{name}: needs scales or sizes"),
            (Some(s), None) => {
                if s.len() != n {
                    return metal_mps_ir::invalid!(
                        "{name}: {} scales for {n} axes of input {shape:?}",
                        s.len()
                    );
                }
                let mut full = vec![1.0; r];
                for (i, &d) in axes.iter().enumerate() {
                    if !(s[i] > 0.0 && s[i].is_finite()) {
                        return metal_mps_ir::invalid!("{name}: scale {} must be positive", s[i]);
                    }
                    full[d] = s[i];
                }
                let mut sizes = Vec::with_capacity(r);
                for d in 0..r {
                    let o = (full[d] * shape[d] as f64).floor();
                    if o >= (1u64 << 48) as f64 {
                        return metal_mps_ir::invalid!("{name}: output size {o} is too large");
                    }
                    sizes.push(o as usize);
                }
                (full, sizes)
            }
            (None, Some(z)) => {
                if z.len() != n {
                    return metal_mps_ir::invalid!(
                        "{name}: {} sizes for {n} axes of input {shape:?}",
                        z.len()
                    );
                }
                let mut sizes: Vec<usize> = shape.to_vec();
                for (i, &d) in axes.iter().enumerate() {
                    sizes[d] = usize::try_from(z[i]).map_err(|_| {
                        metal_mps_ir::Error::Invalid(format!("{name}: negative size {}", z[i]))
                    })?;
                }
                let mut scales = vec![1.0; r];
                for d in 0..r {
                    if shape[d] == 0 {
                        if sizes[d] != 0 {
                            return metal_mps_ir::invalid!("{name}: cannot resize an empty axis");
                        }
                    } else {
                        scales[d] = sizes[d] as f64 / shape[d] as f64;
                    }
                }
                if self.policy != Policy::Stretch {
                    let it = axes.iter().map(|&d| scales[d]);
                    let s = if self.policy == Policy::NotLarger {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(0.0, f64::max)
                    };
                    for &d in &axes {
                        scales[d] = s;
                        sizes[d] = (s * shape[d] as f64 + 0.5) as usize;
                    }
                }
                (scales, sizes)
            }
        };
        checked_numel(&sizes)?;
        Ok(Plan { scales, sizes, roi })
    }

    /// (roi, scales, sizes) read from input tensors or constants.
    fn sources(&self, get: &dyn Fn(usize) -> Option<Result<Vec<f64>>>) -> Result<Inputs> {
        let nonempty = |i: usize| -> Result<Option<Vec<f64>>> {
            match get(i) {
                None => Ok(None),
                Some(v) => {
                    let v = v?;
                    Ok(if v.is_empty() { None } else { Some(v) })
                }
            }
        };
        Ok(match &self.source {
            Source::Attr(s) => (None, Some(s.iter().map(|&x| x as f64).collect()), None),
            Source::Scales => (None, nonempty(1)?, None),
            Source::Full => {
                let sizes = nonempty(3)?.map(|v| v.iter().map(|&x| x as i64).collect());
                (nonempty(1)?, nonempty(2)?, sizes)
            }
        })
    }
}

impl Resize {
    /// Output dims of a partly known input shape under the stretch policy.
    fn partial(
        &self,
        shape: &[Dim],
        scales: Option<&[f64]>,
        sizes: Option<&[i64]>,
    ) -> Option<Vec<Dim>> {
        let r = shape.len();
        let axes: Vec<usize> = match &self.axes {
            None => (0..r).collect(),
            Some(ax) => ax
                .iter()
                .map(|&a| crate::support::axis(self.name, a, r).ok())
                .collect::<Option<_>>()?,
        };
        let mut out = shape.to_vec();
        match (scales, sizes) {
            (Some(s), None) if s.len() == axes.len() => {
                for (&d, &sc) in axes.iter().zip(s) {
                    if sc.is_nan() || sc <= 0.0 || sc.is_infinite() {
                        return None;
                    }
                    out[d] = match shape[d].fixed() {
                        Some(v) => Dim::Fixed((sc * v as f64).floor() as usize),
                        None if sc == 1.0 => shape[d].clone(),
                        None => Dim::Unknown,
                    };
                }
            }
            (None, Some(z)) if z.len() == axes.len() => {
                for (&d, &v) in axes.iter().zip(z) {
                    out[d] = Dim::Fixed(usize::try_from(v).ok()?);
                }
            }
            _ => return None,
        }
        Some(out)
    }
}

/// The roi, scales and sizes inputs, each when given.
type Inputs = (Option<Vec<f64>>, Option<Vec<f64>>, Option<Vec<i64>>);

/// The taps of one output position along one axis: input indices (clamped)
/// and weights, or `None` for an extrapolated position.
struct Taps {
    n: usize,
    idx: Vec<usize>,
    w: Vec<f64>,
    extrapolated: Vec<bool>,
}

fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

impl Resize {
    fn taps(&self, in_w: usize, out_w: usize, scale: f64, roi: Option<(f64, f64)>) -> Result<Taps> {
        let iw = in_w as f64;
        let output_width = scale * iw;
        // Kernel width and first offset.
        let (n, start): (usize, i64) = match (self.mode, self.antialias) {
            (Mode::Nearest, _) | (Mode::Linear, false) => (2, 0),
            (Mode::Cubic, false) => (4, -1),
            (Mode::Linear, true) => {
                let s = scale.min(1.0);
                let st = (-1.0 / s).floor() as i64 + 1;
                ((2 - 2 * st) as usize, st)
            }
            (Mode::Cubic, true) => {
                let s = scale.min(1.0);
                let st = (-2.0 / s).floor() as i64 + 1;
                ((2 - 2 * st) as usize, st)
            }
        };
        if n > 1 << 20 {
            return metal_mps_ir::invalid!("{}: scale {scale} is too small", self.name);
        }
        let total = out_w
            .checked_mul(n)
            .ok_or_else(|| metal_mps_ir::Error::Invalid(format!("{}: too large", self.name)))?;
        let mut t = Taps {
            n,
            idx: Vec::with_capacity(total),
            w: Vec::with_capacity(total),
            extrapolated: vec![false; out_w],
        };
        let mut coeffs = vec![0.0; n];
        for y in 0..out_w {
            let yf = y as f64;
            let x = match self.ctm {
                Ctm::AlignCorners => {
                    if output_width == 1.0 {
                        0.0
                    } else {
                        yf * (iw - 1.0) / (output_width - 1.0)
                    }
                }
                Ctm::Asymmetric => yf / scale,
                Ctm::TfCropAndResize => {
                    let (r0, r1) = roi.unwrap_or((0.0, 1.0));
                    let x = if output_width == 1.0 {
                        (r1 - r0) * (iw - 1.0) / 2.0
                    } else {
                        yf * (r1 - r0) * (iw - 1.0) / (output_width - 1.0)
                    };
                    let x = x + r0 * (iw - 1.0);
                    if x < 0.0 || x > iw - 1.0 {
                        t.extrapolated[y] = true;
                    }
                    x
                }
                Ctm::PytorchHalfPixel => {
                    if output_width == 1.0 {
                        -0.5
                    } else {
                        (yf + 0.5) / scale - 0.5
                    }
                }
                Ctm::HalfPixel => (yf + 0.5) / scale - 0.5,
                Ctm::TfHalfPixelForNn => (yf + 0.5) / scale,
                Ctm::HalfPixelSymmetric => {
                    let adjustment = out_w as f64 / output_width;
                    let center = iw / 2.0;
                    center * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
                }
            };
            if self.nearest == Nearest::Simple && self.mode == Mode::Nearest {
                // Resize-10 / Upsample (as onnxruntime computes it).
                let i = if scale < 1.0 { x.ceil() } else { x.trunc() };
                let i = (i.max(0.0) as usize).min(in_w.saturating_sub(1));
                t.idx.extend([i, i]);
                t.w.extend([1.0, 0.0]);
                continue;
            }
            let xf = x.floor();
            let (base, ratio) = if x == xf {
                (xf - 1.0, 1.0)
            } else {
                (xf, x - xf)
            };
            let base = base as i64;
            match (self.mode, self.antialias) {
                (Mode::Nearest, _) => {
                    let up = if ratio == 1.0 {
                        true
                    } else {
                        match self.nearest {
                            Nearest::RoundPreferFloor => ratio > 0.5,
                            Nearest::RoundPreferCeil => ratio >= 0.5,
                            Nearest::Floor => false,
                            Nearest::Ceil | Nearest::Simple => true,
                        }
                    };
                    coeffs[0] = if up { 0.0 } else { 1.0 };
                    coeffs[1] = if up { 1.0 } else { 0.0 };
                }
                (Mode::Linear, false) => {
                    coeffs[0] = 1.0 - ratio;
                    coeffs[1] = ratio;
                }
                (Mode::Cubic, false) => {
                    for (k, c) in coeffs.iter_mut().enumerate() {
                        *c = cubic(self.cubic_a, (start + k as i64) as f64 - ratio);
                    }
                }
                (Mode::Linear, true) | (Mode::Cubic, true) => {
                    let s = scale.min(1.0);
                    let mut sum = 0.0;
                    for (k, c) in coeffs.iter_mut().enumerate() {
                        let arg = ((start + k as i64) as f64 - ratio) * s;
                        *c = if self.mode == Mode::Linear {
                            (1.0 - arg.abs()).clamp(0.0, 1.0)
                        } else {
                            cubic(self.cubic_a, arg)
                        };
                        sum += *c;
                    }
                    if sum != 0.0 {
                        coeffs.iter_mut().for_each(|c| *c /= sum);
                    }
                }
            }
            if self.exclude_outside {
                let mut sum = 0.0;
                for (k, c) in coeffs.iter_mut().enumerate() {
                    let i = base + start + k as i64;
                    if i < 0 || i >= in_w as i64 {
                        *c = 0.0;
                    }
                    sum += *c;
                }
                if sum != 0.0 {
                    coeffs.iter_mut().for_each(|c| *c /= sum);
                }
            }
            let hi = in_w as i64 - 1;
            for (k, &c) in coeffs.iter().enumerate() {
                let i = (base + start + k as i64).clamp(0, hi.max(0));
                t.idx.push(i as usize);
                t.w.push(c);
            }
        }
        Ok(t)
    }
}

/// Resizes axis `axis` of `data` (shape `shape`) to `out_w` positions.
fn along_axis(
    data: &[f64],
    shape: &[usize],
    axis: usize,
    out_w: usize,
    t: &Taps,
    extrapolation: f64,
) -> Result<Vec<f64>> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let in_w = shape[axis];
    let total = outer
        .checked_mul(out_w)
        .and_then(|v| v.checked_mul(inner))
        .ok_or_else(|| metal_mps_ir::Error::Invalid("Resize: output too large".into()))?;
    let mut y = zeros(total)?;
    if in_w == 0 || total == 0 {
        return Ok(y);
    }
    let plane = |(dst, src): (&mut [f64], &[f64])| {
        for p in 0..out_w {
            let row = &mut dst[p * inner..(p + 1) * inner];
            if t.extrapolated[p] {
                row.iter_mut().for_each(|v| *v = extrapolation);
                continue;
            }
            let (ws, is) = (&t.w[p * t.n..(p + 1) * t.n], &t.idx[p * t.n..(p + 1) * t.n]);
            if inner == 1 {
                row[0] = ws.iter().zip(is).map(|(&w, &i)| w * src[i]).sum();
                continue;
            }
            for (&w, &i) in ws.iter().zip(is) {
                if w == 0.0 {
                    continue;
                }
                let s = &src[i * inner..(i + 1) * inner];
                row.iter_mut().zip(s).for_each(|(d, &v)| *d += w * v);
            }
        }
    };
    y.par_chunks_mut(out_w * inner)
        .zip(data.par_chunks(in_w * inner))
        .spread()
        .for_each(plane);
    Ok(y)
}

fn f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_f64_vec())
}

impl Operator for Resize {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let rank = x.shape.map(|s| s.len());
        let get = |i: usize| -> Option<Result<Vec<f64>>> {
            let k = known_opt(ins, i)?;
            Some(match k.constant {
                Some(c) => f64s(c),
                None => Err(metal_mps_ir::Error::Invalid(String::new())),
            })
        };
        // Absent inputs stay absent; non-constant ones make the shape unknown.
        let unknown = (1..4).any(|i| {
            known_opt(ins, i).is_some_and(|k| k.constant.is_none())
                && !(i == 1 && self.source == Source::Full && self.ctm != Ctm::TfCropAndResize)
        });
        if !unknown {
            let get2 = |i: usize| -> Option<Result<Vec<f64>>> {
                if i == 1 && self.source == Source::Full && self.ctm != Ctm::TfCropAndResize {
                    return None;
                }
                get(i)
            };
            let (roi, scales, sizes) = self.sources(&get2)?;
            if let Some(shape) = x.shape.and_then(fixed_shape) {
                let plan = self.plan(&shape, roi, scales, sizes)?;
                return Ok(vec![(x.dtype, Some(from_fixed(&plan.sizes)))]);
            }
            // A partly known input: axes left alone keep their dims (a
            // symbolic batch, say), stretched axes of known size are computed.
            if let (Some(shape), Policy::Stretch) = (x.shape, self.policy) {
                if let Some(dims) = self.partial(shape, scales.as_deref(), sizes.as_deref()) {
                    return Ok(vec![(x.dtype, Some(dims))]);
                }
            }
        }
        Ok(vec![(x.dtype, unknown_dims(rank))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let get = |i: usize| opt(inputs, i).map(f64s);
        let (roi, scales, sizes) = self.sources(&get)?;
        let shape = x.shape().to_vec();
        let plan = self.plan(&shape, roi, scales, sizes)?;
        let r = shape.len();
        // The output bounds every per-axis table; an empty output needs none
        // (a declared size of 2³¹ beside a 0 must not build a 2³¹-entry table).
        let out_elems = metal_mps_ir::checked_numel(&plan.sizes)?;
        if out_elems == 0 {
            return Ok(vec![store(out, 0, x.dtype(), plan.sizes.clone(), &[])?]);
        }
        metal_mps_ir::limits::check_tensor_bytes(out_elems.saturating_mul(8))?;
        let mut data = values(x)?;
        let mut cur = shape.clone();
        let order: Vec<usize> = match &self.axes {
            Some(ax) => ax
                .iter()
                .map(|&a| crate::support::axis(self.name, a, r))
                .collect::<Result<_>>()?,
            None => (0..r).collect(),
        };
        for axis in order {
            let (s, o) = (plan.scales[axis], plan.sizes[axis]);
            let roi = plan.roi.as_ref().map(|v| (v[axis], v[axis + r]));
            if is_identity(s, o, cur[axis], roi) {
                continue;
            }
            let taps = self.taps(cur[axis], o, s, roi)?;
            data = along_axis(&data, &cur, axis, o, &taps, self.extrapolation)?;
            cur[axis] = o;
        }
        Ok(vec![store(out, 0, x.dtype(), cur, &data)?])
    }

    fn axis_picks(
        &self,
        x_shape: &[usize],
        constants: &[Option<&Tensor>],
    ) -> Option<Vec<Vec<usize>>> {
        if self.mode != Mode::Nearest {
            return None;
        }
        let get = |i: usize| constants.get(i).copied().flatten().map(f64s);
        let (roi, scales, sizes) = self.sources(&get).ok()?;
        let plan = self.plan(x_shape, roi, scales, sizes).ok()?;
        let r = x_shape.len();
        let mut picks: Vec<Vec<usize>> = x_shape.iter().map(|&n| (0..n).collect()).collect();
        let order: Vec<usize> = match &self.axes {
            Some(ax) => ax
                .iter()
                .map(|&a| crate::support::axis(self.name, a, r))
                .collect::<Result<_>>()
                .ok()?,
            None => (0..r).collect(),
        };
        // The axes `eval` resizes, as it resizes them.
        for axis in order {
            let (s, o, n) = (plan.scales[axis], plan.sizes[axis], x_shape[axis]);
            let roi = plan.roi.as_ref().map(|v| (v[axis], v[axis + r]));
            if is_identity(s, o, n, roi) {
                continue;
            }
            let t = self.taps(n, o, s, roi).ok()?;
            picks[axis] = (0..o)
                .map(|p| {
                    let (w, idx) = (&t.w[p * t.n..][..t.n], &t.idx[p * t.n..][..t.n]);
                    // One tap of weight 1, the others 0: anything else is not a pick.
                    let k = w.iter().position(|&w| w == 1.0)?;
                    let others_zero = w.iter().enumerate().all(|(j, &w)| j == k || w == 0.0);
                    (!t.extrapolated[p] && others_zero).then_some(idx[k])
                })
                .collect::<Option<_>>()?;
        }
        Some(picks)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Whether resizing an axis of `n` to `o` positions at `scale` (and `roi`) leaves it as it is.
fn is_identity(scale: f64, o: usize, n: usize, roi: Option<(f64, f64)>) -> bool {
    (scale - 1.0).abs() <= 1e-9 * scale.abs().max(1.0)
        && o == n
        && roi.is_none_or(|(a, b)| a.abs() <= 1e-9 && (b - 1.0).abs() <= 1e-9)
}
