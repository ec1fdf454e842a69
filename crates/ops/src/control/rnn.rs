//! The recurrent networks RNN, GRU and LSTM (opsets 1 to 22): directions,
//! activations with their alpha/beta, clip, input_forget, linear_before_reset,
//! layout, sequence_lens, initial states, peepholes and the optional outputs.
//!
//! The input projection of every time step is one matrix product (the
//! built-in MatMul for the reduced-precision and f32 types); the recurrence
//! runs in f64 and the outputs are converted back to the input dtype.

use crate::support::{check_float, check_same, from_f64s, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Shape, Tensor,
};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Rnn,
    Gru,
    Lstm,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rnn => "RNN",
            Kind::Gru => "GRU",
            Kind::Lstm => "LSTM",
        }
    }

    /// Gates per direction.
    fn gates(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }

    /// Activation functions per direction, and their defaults.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Kind::Rnn => &["Tanh"],
            Kind::Gru => &["Sigmoid", "Tanh"],
            Kind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// One activation function with its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => {
                if x > 30.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
}

/// Parses activation names; alphas and betas are consumed in order by the
/// functions that take them (defaults where the lists run out).
fn parse_acts(names: &[String], alphas: &[f32], betas: &[f32]) -> Result<Vec<Act>> {
    let (mut ai, mut bi) = (alphas.iter(), betas.iter());
    let mut alpha = |d: f64| ai.next().map(|&v| v as f64).unwrap_or(d);
    let mut beta = |d: f64| bi.next().map(|&v| v as f64).unwrap_or(d);
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "relu" => Act::Relu,
                "tanh" => Act::Tanh,
                "sigmoid" => Act::Sigmoid,
                "affine" => Act::Affine(alpha(1.0), beta(0.0)),
                "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
                "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
                "scaledtanh" => Act::ScaledTanh(alpha(1.0), beta(1.0)),
                "hardsigmoid" => Act::HardSigmoid(alpha(0.2), beta(0.5)),
                "elu" => Act::Elu(alpha(1.0)),
                "softsign" => Act::Softsign,
                "softplus" => Act::Softplus,
                other => {
                    return metal_mps_ir::unsupported!("recurrent activation '{other}'");
                }
            })
        })
        .collect()
}

#[derive(Debug)]
pub struct Recurrent {
    kind: Kind,
    hidden: usize,
    dirs: usize,
    reverse_only: bool,
    /// Activations of each direction (`kind.gates()`-dependent count).
    acts: Vec<Vec<Act>>,
    clip: Option<f64>,
    input_forget: bool,
    linear_before_reset: bool,
    /// 1: batch-major inputs and outputs.
    batch_major: bool,
}

fn build(cx: &BuildCx, kind: Kind) -> Result<Op> {
    let name = kind.name();
    let hidden = cx.attrs.int("hidden_size", -1)?;
    let hidden = usize::try_from(hidden)
        .ok()
        .filter(|&h| h > 0)
        .ok_or_else(|| Error::InvalidModel(format!("{name} needs a positive hidden_size")))?;
    let direction = cx.attrs.str_or("direction", "forward")?;
    let (dirs, reverse_only) = match direction.as_str() {
        "forward" => (1, false),
        "reverse" => (1, true),
        "bidirectional" => (2, false),
        d => return metal_mps_ir::invalid!("{name}: unknown direction '{d}'"),
    };
    let per = kind.default_activations().len();
    let names = match cx.attrs.strings("activations")? {
        Some(v) if v.len() == per * dirs => v,
        // One direction's list given for both directions.
        Some(v) if v.len() == per && dirs == 2 => v.iter().chain(&v).cloned().collect(),
        Some(v) => {
            return metal_mps_ir::invalid!(
                "{name}: {} activations given, {} expected",
                v.len(),
                per * dirs
            )
        }
        None => (0..dirs)
            .flat_map(|_| kind.default_activations().iter().map(|s| s.to_string()))
            .collect(),
    };
    let alphas = cx.attrs.floats("activation_alpha")?.unwrap_or_default();
    let betas = cx.attrs.floats("activation_beta")?.unwrap_or_default();
    let all = parse_acts(&names, &alphas, &betas)?;
    let acts = all.chunks(per).map(<[Act]>::to_vec).collect();
    let clip = cx.attrs.opt_float("clip")?.map(f64::from);
    if let Some(c) = clip {
        if c.is_nan() || c < 0.0 {
            return metal_mps_ir::invalid!("{name}: clip must be non-negative, not {c}");
        }
    }
    let layout = cx.attrs.int("layout", 0)?;
    if !(0..=1).contains(&layout) {
        return metal_mps_ir::invalid!("{name}: layout must be 0 or 1, not {layout}");
    }
    Ok(Op::Dyn(DynOp::new(Recurrent {
        kind,
        hidden,
        dirs,
        reverse_only,
        acts,
        clip,
        input_forget: kind == Kind::Lstm && cx.attrs.flag("input_forget", false)?,
        linear_before_reset: kind == Kind::Gru && cx.attrs.flag("linear_before_reset", false)?,
        batch_major: layout == 1,
    })))
}

pub fn build_rnn(cx: &BuildCx) -> Result<Op> {
    build(cx, Kind::Rnn)
}

pub fn build_gru(cx: &BuildCx) -> Result<Op> {
    build(cx, Kind::Gru)
}

pub fn build_lstm(cx: &BuildCx) -> Result<Op> {
    build(cx, Kind::Lstm)
}

/// Rows × cols of `x` (rows × k) times the transpose of `w` (cols × k).
fn project(
    x: &[f64],
    w: &[f64],
    rows: usize,
    k: usize,
    cols: usize,
    dtype: DType,
) -> Result<Vec<f64>> {
    if dtype == DType::F64 {
        let mut y = vec![0.0; rows * cols];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            for (c, out) in y[r * cols..(r + 1) * cols].iter_mut().enumerate() {
                let wc = &w[c * k..(c + 1) * k];
                *out = xr.iter().zip(wc).map(|(a, b)| a * b).sum();
            }
        }
        return Ok(y);
    }
    let xt = Tensor::from_vec(
        vec![rows, k],
        x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
    )?;
    let mut wt = vec![0f32; k * cols];
    for c in 0..cols {
        for i in 0..k {
            wt[i * cols + c] = w[c * k + i] as f32;
        }
    }
    let wt = Tensor::from_vec(vec![k, cols], wt)?;
    let y = metal_mps_cpu::eval_op(
        &Op::MatMul {
            activation: Default::default(),
        },
        &[Some(&xt), Some(&wt)],
        1,
        &mut Out::fresh(),
    )?;
    let y = y
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("MatMul returned nothing".into()))?;
    Ok(y.to_f64_vec())
}

impl Recurrent {
    fn check_shape(&self, what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
        if t.shape() != want {
            return metal_mps_ir::invalid!(
                "{}: {what} has shape {:?}, expected {want:?}",
                self.kind.name(),
                t.shape()
            );
        }
        Ok(())
    }

    /// A state input ([dirs, batch, H], or [batch, dirs, H] in layout 1) as [dirs][batch][H].
    fn state_in(&self, t: Option<&Tensor>, what: &str, batch: usize) -> Result<Vec<f64>> {
        let (d, h) = (self.dirs, self.hidden);
        let Some(t) = t else {
            return Ok(vec![0.0; d * batch * h]);
        };
        if self.batch_major {
            self.check_shape(what, t, &[batch, d, h])?;
            let v = t.to_f64_vec();
            let mut out = vec![0.0; d * batch * h];
            for b in 0..batch {
                for di in 0..d {
                    out[(di * batch + b) * h..(di * batch + b + 1) * h]
                        .copy_from_slice(&v[(b * d + di) * h..(b * d + di + 1) * h]);
                }
            }
            Ok(out)
        } else {
            self.check_shape(what, t, &[d, batch, h])?;
            Ok(t.to_f64_vec())
        }
    }

    /// A [dirs][batch][H] state as an output tensor in the node's layout.
    fn state_out(&self, s: &[f64], batch: usize, dtype: DType) -> Result<Tensor> {
        let (d, h) = (self.dirs, self.hidden);
        if self.batch_major {
            let mut v = vec![0.0; s.len()];
            for b in 0..batch {
                for di in 0..d {
                    v[(b * d + di) * h..(b * d + di + 1) * h]
                        .copy_from_slice(&s[(di * batch + b) * h..(di * batch + b + 1) * h]);
                }
            }
            from_f64s(dtype, vec![batch, d, h], &v)
        } else {
            from_f64s(dtype, vec![d, batch, h], s)
        }
    }

    fn clip(&self, x: f64) -> f64 {
        match self.clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        }
    }
}

impl Operator for Recurrent {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let name = self.kind.name();
        let x = known(inputs, 0)?;
        check_float(name, x.dtype)?;
        for i in [1, 2, 3, 5, 6, 7] {
            if let Some(k) = known_opt(inputs, i) {
                check_same(name, x.dtype, k.dtype)?;
            }
        }
        let (seq, batch) = match x.shape {
            Some(s) if s.len() == 3 => {
                if self.batch_major {
                    (s[1].clone(), s[0].clone())
                } else {
                    (s[0].clone(), s[1].clone())
                }
            }
            Some(s) => {
                return metal_mps_ir::invalid!("{name}: X must have rank 3, not {}", s.len())
            }
            None => (Dim::Unknown, Dim::Unknown),
        };
        let (d, h) = (Dim::Fixed(self.dirs), Dim::Fixed(self.hidden));
        let y: Shape = if self.batch_major {
            vec![batch.clone(), seq, d.clone(), h.clone()]
        } else {
            vec![seq, d.clone(), batch.clone(), h.clone()]
        };
        let state: Shape = if self.batch_major {
            vec![batch, d, h]
        } else {
            vec![d, batch, h]
        };
        let max_out = if self.kind == Kind::Lstm { 3 } else { 2 };
        if n_out > max_out {
            return metal_mps_ir::invalid!("{name} has at most {max_out} outputs, not {n_out}");
        }
        let all = [
            (x.dtype, Some(y)),
            (x.dtype, Some(state.clone())),
            (x.dtype, Some(state)),
        ];
        Ok(all[..n_out].to_vec())
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        n_out: usize,
        _out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let name = self.kind.name();
        let x = crate::support::arg(inputs, 0)?;
        let w = crate::support::arg(inputs, 1)?;
        let r = crate::support::arg(inputs, 2)?;
        let dtype = x.dtype();
        check_float(name, dtype)?;
        for (i, t) in inputs.iter().enumerate().take(8) {
            if let (Some(t), true) = (t, i != 4) {
                check_same(name, dtype, t.dtype())?;
            }
        }
        if x.rank() != 3 {
            return metal_mps_ir::invalid!("{name}: X must have rank 3, not {:?}", x.shape());
        }
        let (seq, batch, isz) = if self.batch_major {
            (x.shape()[1], x.shape()[0], x.shape()[2])
        } else {
            (x.shape()[0], x.shape()[1], x.shape()[2])
        };
        let (dirs, h, g) = (self.dirs, self.hidden, self.kind.gates());
        let gh = g * h;
        self.check_shape("W", w, &[dirs, gh, isz])?;
        self.check_shape("R", r, &[dirs, gh, h])?;
        checked_numel(&[seq, batch, dirs, gh])?;
        let bias = match opt(inputs, 3) {
            Some(b) => {
                self.check_shape("B", b, &[dirs, 2 * gh])?;
                b.to_f64_vec()
            }
            None => vec![0.0; dirs * 2 * gh],
        };
        let lens = super::sequence_lens(name, opt(inputs, 4), batch, seq)?;
        let mut hs = self.state_in(opt(inputs, 5), "initial_h", batch)?;
        let mut cs = if self.kind == Kind::Lstm {
            self.state_in(opt(inputs, 6), "initial_c", batch)?
        } else {
            Vec::new()
        };
        let peep = match (self.kind, opt(inputs, 7)) {
            (Kind::Lstm, Some(p)) => {
                self.check_shape("P", p, &[dirs, 3 * h])?;
                p.to_f64_vec()
            }
            _ => vec![0.0; dirs * 3 * h],
        };
        // X as [seq * batch, input] rows in (t, b) order.
        let xv = x.to_f64_vec();
        let xrows = if self.batch_major {
            let mut v = vec![0.0; xv.len()];
            for b in 0..batch {
                for t in 0..seq {
                    let (src, dst) = ((b * seq + t) * isz, (t * batch + b) * isz);
                    v[dst..dst + isz].copy_from_slice(&xv[src..src + isz]);
                }
            }
            v
        } else {
            xv
        };
        let wv = w.to_f64_vec();
        let rv = r.to_f64_vec();
        // Y as [seq][dirs][batch][h] (zero past each sequence's end).
        let mut y = vec![0.0; seq * dirs * batch * h];
        let mut gates = vec![0.0; gh];
        for di in 0..dirs {
            let xw = project(
                &xrows,
                &wv[di * gh * isz..(di + 1) * gh * isz],
                seq * batch,
                isz,
                gh,
                dtype,
            )?;
            let rd = &rv[di * gh * h..(di + 1) * gh * h];
            let (wb, rb) = (
                &bias[di * 2 * gh..di * 2 * gh + gh],
                &bias[di * 2 * gh + gh..(di + 1) * 2 * gh],
            );
            let pd = &peep[di * 3 * h..(di + 1) * 3 * h];
            let acts = &self.acts[di];
            let reverse = self.reverse_only || di == 1;
            for (b, &len) in lens.iter().enumerate() {
                let hb = &mut hs[(di * batch + b) * h..(di * batch + b + 1) * h];
                let mut hprev = hb.to_vec();
                let mut cprev = if self.kind == Kind::Lstm {
                    cs[(di * batch + b) * h..(di * batch + b + 1) * h].to_vec()
                } else {
                    Vec::new()
                };
                for step in 0..len {
                    let t = if reverse { len - 1 - step } else { step };
                    let xt = &xw[(t * batch + b) * gh..(t * batch + b + 1) * gh];
                    // Recurrent product H R^T, per gate row.
                    for (j, gate) in gates.iter_mut().enumerate() {
                        let rr = &rd[j * h..(j + 1) * h];
                        *gate = rr.iter().zip(&hprev).map(|(a, b)| a * b).sum();
                    }
                    let hnew: Vec<f64> = match self.kind {
                        Kind::Rnn => (0..h)
                            .map(|k| acts[0].apply(self.clip(xt[k] + gates[k] + wb[k] + rb[k])))
                            .collect(),
                        Kind::Gru => {
                            let (f, gact) = (acts[0], acts[1]);
                            let mut out = vec![0.0; h];
                            let z: Vec<f64> = (0..h)
                                .map(|k| f.apply(self.clip(xt[k] + gates[k] + wb[k] + rb[k])))
                                .collect();
                            let rg: Vec<f64> = (0..h)
                                .map(|k| {
                                    let j = h + k;
                                    f.apply(self.clip(xt[j] + gates[j] + wb[j] + rb[j]))
                                })
                                .collect();
                            let rh: Vec<f64> = if self.linear_before_reset {
                                Vec::new()
                            } else {
                                // (r ⊙ H) Rh^T
                                let rhp: Vec<f64> = (0..h).map(|k| rg[k] * hprev[k]).collect();
                                (0..h)
                                    .map(|k| {
                                        let rr = &rd[(2 * h + k) * h..(2 * h + k + 1) * h];
                                        rr.iter().zip(&rhp).map(|(a, b)| a * b).sum()
                                    })
                                    .collect()
                            };
                            for k in 0..h {
                                let j = 2 * h + k;
                                let pre = if self.linear_before_reset {
                                    xt[j] + rg[k] * (gates[j] + rb[j]) + wb[j]
                                } else {
                                    xt[j] + rh[k] + rb[j] + wb[j]
                                };
                                let hh = gact.apply(self.clip(pre));
                                out[k] = (1.0 - z[k]) * hh + z[k] * hprev[k];
                            }
                            out
                        }
                        Kind::Lstm => {
                            let (f, gact, hact) = (acts[0], acts[1], acts[2]);
                            let pre = |gi: usize, k: usize| {
                                let j = gi * h + k;
                                xt[j] + gates[j] + wb[j] + rb[j]
                            };
                            let mut out = vec![0.0; h];
                            for k in 0..h {
                                let i = f.apply(self.clip(pre(0, k) + pd[k] * cprev[k]));
                                let fg = if self.input_forget {
                                    1.0 - i
                                } else {
                                    f.apply(self.clip(pre(2, k) + pd[2 * h + k] * cprev[k]))
                                };
                                let c = gact.apply(self.clip(pre(3, k)));
                                let cn = fg * cprev[k] + i * c;
                                let o = f.apply(self.clip(pre(1, k) + pd[h + k] * cn));
                                out[k] = o * hact.apply(cn);
                                cprev[k] = cn;
                            }
                            out
                        }
                    };
                    let yo = ((t * dirs + di) * batch + b) * h;
                    y[yo..yo + h].copy_from_slice(&hnew);
                    hprev = hnew;
                }
                if len == 0 {
                    // As onnxruntime: a sequence of length 0 leaves zero states.
                    hprev.fill(0.0);
                    cprev.fill(0.0);
                }
                hb.copy_from_slice(&hprev);
                if self.kind == Kind::Lstm {
                    cs[(di * batch + b) * h..(di * batch + b + 1) * h].copy_from_slice(&cprev);
                }
            }
        }
        let mut outs = Vec::with_capacity(n_out);
        if n_out > 0 {
            outs.push(if self.batch_major {
                let mut v = vec![0.0; y.len()];
                for t in 0..seq {
                    for di in 0..dirs {
                        for b in 0..batch {
                            let src = ((t * dirs + di) * batch + b) * h;
                            let dst = ((b * seq + t) * dirs + di) * h;
                            v[dst..dst + h].copy_from_slice(&y[src..src + h]);
                        }
                    }
                }
                from_f64s(dtype, vec![batch, seq, dirs, h], &v)?
            } else {
                from_f64s(dtype, vec![seq, dirs, batch, h], &y)?
            });
        }
        if n_out > 1 {
            outs.push(self.state_out(&hs, batch, dtype)?);
        }
        if n_out > 2 {
            if self.kind != Kind::Lstm {
                return metal_mps_ir::invalid!("{name} has 2 outputs, not {n_out}");
            }
            outs.push(self.state_out(&cs, batch, dtype)?);
        }
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
