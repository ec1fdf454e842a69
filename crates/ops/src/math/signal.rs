//! The signal operators: DFT (opset 17: axis attribute; opset 20: axis input),
//! STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.
//!
//! Signals are `[batch, ..., n, 1]` (real) or `[..., n, 2]` (complex, real and
//! imaginary parts); transforms are direct sums in f64.

use crate::support::{arg, check_float, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result,
    Tensor,
};
use std::any::Any;
use std::f64::consts::PI;

fn scalar_int(t: &Tensor, op: &str, what: &str) -> Result<i64> {
    let v = t.to_i64_vec()?;
    match v[..] {
        [x] => Ok(x),
        _ => metal_mps_ir::invalid!("{op}: {what} must hold one value"),
    }
}

fn write<T: Element>(out: &mut Out, i: usize, shape: Vec<usize>, vals: &[f64]) -> Result<Tensor> {
    let mut y = out.tensor(i, T::DTYPE, shape)?;
    y.as_slice_mut::<T>()?
        .iter_mut()
        .zip(vals)
        .for_each(|(o, &v)| *o = T::from_f64(v));
    Ok(y)
}

#[derive(Debug)]
struct Dft {
    /// `Some` before opset 20 (the attribute), else the axis is input 2.
    attr_axis: Option<i64>,
    inverse: bool,
    onesided: bool,
}

pub fn build_dft(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Dft {
        attr_axis: if cx.opset < 20 {
            Some(cx.attrs.int("axis", 1)?)
        } else {
            None
        },
        inverse: cx.attrs.flag("inverse", false)?,
        onesided: cx.attrs.flag("onesided", false)?,
    })))
}

impl Dft {
    /// The signal axis of an input of rank `r` (the last dim is the complex one).
    fn axis(&self, a: i64, r: usize) -> Result<usize> {
        if r < 2 {
            return metal_mps_ir::invalid!("DFT: input must have rank >= 2");
        }
        let ax = if a < 0 { a + r as i64 } else { a };
        if ax < 0 || ax as usize >= r - 1 {
            return metal_mps_ir::invalid!("DFT: axis {a} out of range for rank {r}");
        }
        Ok(ax as usize)
    }

    /// Output length along the axis and the transform length.
    fn lengths(&self, n_in: usize, dft_length: Option<i64>) -> Result<(usize, usize)> {
        let n = match dft_length {
            Some(l) if l < 1 => return metal_mps_ir::invalid!("DFT: dft_length {l} must be >= 1"),
            Some(l) => l as usize,
            None if self.inverse && self.onesided => 2 * n_in.saturating_sub(1),
            None => n_in,
        };
        let out_len = if self.onesided && !self.inverse {
            n / 2 + 1
        } else {
            n
        };
        Ok((out_len, n))
    }

    fn out_last(&self) -> usize {
        if self.inverse && self.onesided {
            1
        } else {
            2
        }
    }
}

impl Operator for Dft {
    fn name(&self) -> &str {
        "DFT"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float("DFT", x.dtype)?;
        let Some(s) = x.shape else {
            return Ok(vec![(x.dtype, None)]);
        };
        let a = match self.attr_axis {
            Some(a) => Some(a),
            None => match known_opt(ins, 2) {
                None => Some(-2),
                Some(k) => k
                    .constant
                    .map(|c| scalar_int(c, "DFT", "axis"))
                    .transpose()?,
            },
        };
        let len = match known_opt(ins, 1) {
            None => Some(None),
            Some(k) => k
                .constant
                .map(|c| scalar_int(c, "DFT", "dft_length"))
                .transpose()?
                .map(Some),
        };
        let mut shape = s.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = Dim::Fixed(self.out_last());
        }
        match a {
            Some(a) => {
                let ax = self.axis(a, s.len())?;
                shape[ax] = match (&s[ax], len) {
                    (Dim::Fixed(n), Some(l)) => Dim::Fixed(self.lengths(*n, l)?.0),
                    (_, Some(Some(l))) => Dim::Fixed(self.lengths(0, Some(l))?.0),
                    _ => Dim::Unknown,
                };
            }
            None => {
                for d in shape.iter_mut().take(s.len() - 1) {
                    *d = Dim::Unknown;
                }
            }
        }
        Ok(vec![(x.dtype, Some(shape))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_float("DFT", x.dtype())?;
        let a = match self.attr_axis {
            Some(a) => a,
            None => opt(ins, 2)
                .map(|t| scalar_int(t, "DFT", "axis"))
                .transpose()?
                .unwrap_or(-2),
        };
        let s = x.shape();
        let ax = self.axis(a, s.len())?;
        let comps = s[s.len() - 1];
        if comps != 1 && comps != 2 {
            return metal_mps_ir::invalid!("DFT: last dim is {comps}, must be 1 or 2");
        }
        let len = opt(ins, 1)
            .map(|t| scalar_int(t, "DFT", "dft_length"))
            .transpose()?;
        let n_in = s[ax];
        let (out_len, n) = self.lengths(n_in, len)?;
        let outer: usize = s[..ax].iter().product();
        let inner: usize = s[ax + 1..s.len() - 1].iter().product();
        let oc = self.out_last();
        let mut oshape = s.to_vec();
        oshape[ax] = out_len;
        *oshape.last_mut().unwrap_or(&mut 0) = oc;
        let total = checked_numel(&oshape)?;
        checked_numel(&[n, out_len])?;
        let xv = x.to_f64_vec();
        let mut yv = metal_mps_ir::limits::try_vec::<f64>(total)?;
        let mut re = metal_mps_ir::limits::try_vec::<f64>(n)?;
        let mut im = metal_mps_ir::limits::try_vec::<f64>(n)?;
        // Twiddles e^{-2 pi i k / n}.
        let (cos, sin): (Vec<f64>, Vec<f64>) = (0..n)
            .map(|k| {
                let t = 2.0 * PI * k as f64 / n as f64;
                (t.cos(), t.sin())
            })
            .unzip();
        for o in 0..outer {
            for i in 0..inner {
                // The signal, truncated or zero-padded to n.
                let take = if self.inverse && self.onesided {
                    n_in.min(n / 2 + 1)
                } else {
                    n_in
                }
                .min(n);
                re.fill(0.0);
                im.fill(0.0);
                for k in 0..take {
                    let at = ((o * n_in + k) * inner + i) * comps;
                    re[k] = xv[at];
                    if comps == 2 {
                        im[k] = xv[at + 1];
                    }
                }
                for f in 0..out_len {
                    let (mut sr, mut si) = (0.0, 0.0);
                    if self.inverse && self.onesided {
                        // Hermitian extension: real output.
                        for k in 0..take {
                            let w = if k == 0 || 2 * k == n { 1.0 } else { 2.0 };
                            let t = (k * f) % n;
                            // Re((re + i im) e^{+i theta}).
                            sr += w * (re[k] * cos[t] - im[k] * sin[t]);
                        }
                        sr /= n as f64;
                    } else {
                        for k in 0..take {
                            let t = (k * f) % n;
                            let (c, sn) = (cos[t], if self.inverse { sin[t] } else { -sin[t] });
                            sr += re[k] * c - im[k] * sn;
                            si += re[k] * sn + im[k] * c;
                        }
                        if self.inverse {
                            sr /= n as f64;
                            si /= n as f64;
                        }
                    }
                    let at = ((o * out_len + f) * inner + i) * oc;
                    yv[at] = sr;
                    if oc == 2 {
                        yv[at + 1] = si;
                    }
                }
            }
        }
        let y = dispatch_dtype!(x.dtype(), T => write::<T>(out, 0, oshape, &yv)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct Stft {
    onesided: bool,
}

pub fn build_stft(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Stft {
        onesided: cx.attrs.flag("onesided", true)?,
    })))
}

impl Operator for Stft {
    fn name(&self) -> &str {
        "STFT"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float("STFT", x.dtype)?;
        let step = known_opt(ins, 1)
            .and_then(|k| k.constant)
            .map(|c| scalar_int(c, "STFT", "frame_step"))
            .transpose()?;
        let flen = match (known_opt(ins, 2), known_opt(ins, 3)) {
            (_, Some(k)) => k
                .constant
                .map(|c| scalar_int(c, "STFT", "frame_length"))
                .transpose()?,
            (Some(w), None) => match w.shape {
                Some([Dim::Fixed(n)]) => Some(*n as i64),
                _ => None,
            },
            (None, None) => None,
        };
        let shape = x.shape.map(|s| {
            let batch = s.first().cloned().unwrap_or(Dim::Unknown);
            let frames = match (s.get(1), step, flen) {
                (Some(Dim::Fixed(len)), Some(st), Some(fl)) if st > 0 && fl as usize <= *len => {
                    Dim::Fixed(1 + (*len - fl as usize) / st as usize)
                }
                _ => Dim::Unknown,
            };
            let bins = match flen {
                Some(fl) if self.onesided => Dim::Fixed(fl as usize / 2 + 1),
                Some(fl) => Dim::Fixed(fl as usize),
                None => Dim::Unknown,
            };
            vec![batch, frames, bins, Dim::Fixed(2)]
        });
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_float("STFT", x.dtype())?;
        let s = x.shape();
        if s.len() != 3 || (s[2] != 1 && s[2] != 2) {
            return metal_mps_ir::invalid!("STFT: signal of shape {s:?}, expected [batch, n, 1|2]");
        }
        let (batch, len, comps) = (s[0], s[1], s[2]);
        let step = scalar_int(arg(ins, 1)?, "STFT", "frame_step")?;
        if step < 1 {
            return metal_mps_ir::invalid!("STFT: frame_step {step} must be >= 1");
        }
        let window = opt(ins, 2).map(|w| w.to_f64_vec());
        let flen = match (opt(ins, 3), &window) {
            (Some(t), _) => scalar_int(t, "STFT", "frame_length")?,
            (None, Some(w)) => w.len() as i64,
            (None, None) => len as i64,
        };
        if flen < 1 || flen as usize > len {
            return metal_mps_ir::invalid!("STFT: frame_length {flen} for a signal of {len}");
        }
        let flen = flen as usize;
        let window = window.unwrap_or_else(|| vec![1.0; flen]);
        if window.len() != flen {
            return metal_mps_ir::invalid!(
                "STFT: window of {} samples, frame_length {flen}",
                window.len()
            );
        }
        let step = step as usize;
        let frames = 1 + (len - flen) / step;
        let bins = if self.onesided { flen / 2 + 1 } else { flen };
        let oshape = vec![batch, frames, bins, 2];
        let total = checked_numel(&oshape)?;
        let xv = x.to_f64_vec();
        let mut yv = metal_mps_ir::limits::try_vec::<f64>(total)?;
        let (cos, sin): (Vec<f64>, Vec<f64>) = (0..flen)
            .map(|k| {
                let t = 2.0 * PI * k as f64 / flen as f64;
                (t.cos(), t.sin())
            })
            .unzip();
        for b in 0..batch {
            for fr in 0..frames {
                let start = fr * step;
                for f in 0..bins {
                    let (mut sr, mut si) = (0.0, 0.0);
                    for (k, &wk) in window.iter().enumerate() {
                        let at = (b * len + start + k) * comps;
                        let (r, i) = (xv[at] * wk, if comps == 2 { xv[at + 1] * wk } else { 0.0 });
                        let t = (k * f) % flen;
                        let (c, sn) = (cos[t], -sin[t]);
                        sr += r * c - i * sn;
                        si += r * sn + i * c;
                    }
                    let at = ((b * frames + fr) * bins + f) * 2;
                    yv[at] = sr;
                    yv[at + 1] = si;
                }
            }
        }
        let y = dispatch_dtype!(x.dtype(), T => write::<T>(out, 0, oshape, &yv)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

#[derive(Debug)]
struct Window {
    name: String,
    kind: WindowKind,
    periodic: bool,
    dtype: DType,
}

pub fn build_window(cx: &BuildCx) -> Result<Op> {
    let kind = match cx.op_type {
        "HannWindow" => WindowKind::Hann,
        "HammingWindow" => WindowKind::Hamming,
        _ => WindowKind::Blackman,
    };
    let dtype = DType::from_onnx_code(cx.attrs.int("output_datatype", 1)?)?;
    if dtype == DType::Bool {
        return metal_mps_ir::unsupported!("{}: output_datatype BOOL", cx.op_type);
    }
    Ok(Op::Dyn(DynOp::new(Window {
        name: cx.op_type.to_string(),
        kind,
        periodic: cx.attrs.flag("periodic", true)?,
        dtype,
    })))
}

fn size_input(t: &Tensor, op: &str) -> Result<usize> {
    if !t.dtype().is_int() {
        return metal_mps_ir::unsupported!("{op}: size of {} (an integer)", t.dtype());
    }
    let n = scalar_int(t, op, "size")?;
    if n < 0 {
        return metal_mps_ir::invalid!("{op}: size {n} is negative");
    }
    Ok(n as usize)
}

impl Operator for Window {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let k = known(ins, 0)?;
        let n = k.constant.map(|c| size_input(c, &self.name)).transpose()?;
        Ok(vec![(
            self.dtype,
            Some(vec![n.map_or(Dim::Unknown, Dim::Fixed)]),
        )])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let n = size_input(arg(ins, 0)?, &self.name)?;
        checked_numel(&[n])?;
        let denom = if self.periodic {
            n as f64
        } else {
            n as f64 - 1.0
        };
        let vals: Vec<f64> = (0..n)
            .map(|i| {
                let t = 2.0 * PI * i as f64 / denom;
                match self.kind {
                    WindowKind::Hann => (PI * i as f64 / denom).sin().powi(2),
                    WindowKind::Hamming => {
                        let a = 25.0 / 46.0;
                        a - (1.0 - a) * t.cos()
                    }
                    WindowKind::Blackman => 0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos(),
                }
            })
            .collect();
        let y = dispatch_dtype!(self.dtype, T => write::<T>(out, 0, vec![n], &vals)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct Mel {
    dtype: DType,
}

pub fn build_mel(cx: &BuildCx) -> Result<Op> {
    let dtype = DType::from_onnx_code(cx.attrs.int("output_datatype", 1)?)?;
    if dtype == DType::Bool {
        return metal_mps_ir::unsupported!("MelWeightMatrix: output_datatype BOOL");
    }
    Ok(Op::Dyn(DynOp::new(Mel { dtype })))
}

impl Operator for Mel {
    fn name(&self) -> &str {
        "MelWeightMatrix"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let c = |i: usize| -> Result<Option<i64>> {
            known(ins, i)?
                .constant
                .map(|t| scalar_int(t, "MelWeightMatrix", "size"))
                .transpose()
        };
        let bins = c(0)?.map_or(Dim::Unknown, |v| Dim::Fixed(v.max(0) as usize));
        let spec = c(1)?.map_or(Dim::Unknown, |v| Dim::Fixed((v.max(0) / 2 + 1) as usize));
        Ok(vec![(self.dtype, Some(vec![spec, bins]))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let op = "MelWeightMatrix";
        let mel_bins = scalar_int(arg(ins, 0)?, op, "num_mel_bins")?;
        let dft_length = scalar_int(arg(ins, 1)?, op, "dft_length")?;
        let sample_rate = scalar_int(arg(ins, 2)?, op, "sample_rate")?;
        let lower = arg(ins, 3)?.scalar_f64()?;
        let upper = arg(ins, 4)?.scalar_f64()?;
        if mel_bins < 1 || dft_length < 1 || sample_rate < 1 {
            return metal_mps_ir::invalid!(
                "{op}: num_mel_bins {mel_bins}, dft_length {dft_length}, sample_rate {sample_rate} must be >= 1"
            );
        }
        let mel_bins = mel_bins as usize;
        let spec_bins = dft_length as usize / 2 + 1;
        let n = checked_numel(&[spec_bins, mel_bins])?;
        let to_mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
        let (lo, hi) = (to_mel(lower), to_mel(upper));
        let step = (hi - lo) / (mel_bins + 2) as f64;
        let points: Vec<i64> = (0..mel_bins + 2)
            .map(|i| {
                let mel = i as f64 * step + lo;
                let hz = 700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1();
                (((dft_length + 1) as f64 * hz) / sample_rate as f64).floor() as i64
            })
            .collect();
        let mut w = metal_mps_ir::limits::try_vec::<f64>(n)?;
        let mut set = |j: i64, i: usize, v: f64| -> Result<()> {
            if j < 0 || j as usize >= spec_bins {
                return metal_mps_ir::invalid!("{op}: frequency bin {j} outside 0..{spec_bins}");
            }
            w[j as usize * mel_bins + i] = v;
            Ok(())
        };
        for i in 0..mel_bins {
            let (l, c, h) = (points[i], points[i + 1], points[i + 2]);
            if c == l {
                set(c, i, 1.0)?;
            } else {
                for j in l..=c {
                    set(j, i, (j - l) as f64 / (c - l) as f64)?;
                }
            }
            if h > c {
                for j in c..h {
                    set(j, i, (h - j) as f64 / (h - c) as f64)?;
                }
            }
        }
        let y =
            dispatch_dtype!(self.dtype, T => write::<T>(out, 0, vec![spec_bins, mel_bins], &w)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
