//! The random generators: RandomUniform, RandomNormal (shape attribute),
//! RandomUniformLike, RandomNormalLike (shape of the input) and Bernoulli
//! (one draw per input probability). A `seed` attribute makes the sequence
//! reproducible from load to load; without it the generator is seeded from
//! the clock. Each run continues the operator's sequence (splitmix64).

use crate::support::{arg, check_float, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result,
    Tensor,
};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dist {
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, scale: f64 },
    Bernoulli,
}

#[derive(Debug)]
struct Random {
    name: String,
    dist: Dist,
    /// The output dtype; `None`: the input's.
    dtype: Option<DType>,
    /// `Some` for RandomUniform/RandomNormal.
    shape: Option<Vec<usize>>,
    state: AtomicU64,
}

fn splitmix(state: &AtomicU64) -> u64 {
    let s = state
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1).
fn unit(state: &AtomicU64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let f = |n: &str, d: f32| a.float(n, d).map(f64::from);
    let dist = match cx.op_type {
        "RandomUniform" | "RandomUniformLike" => Dist::Uniform {
            low: f("low", 0.0)?,
            high: f("high", 1.0)?,
        },
        "RandomNormal" | "RandomNormalLike" => Dist::Normal {
            mean: f("mean", 0.0)?,
            scale: f("scale", 1.0)?,
        },
        "Bernoulli" => Dist::Bernoulli,
        other => return metal_mps_ir::unsupported!("random operator '{other}'"),
    };
    let shape = if matches!(cx.op_type, "RandomUniform" | "RandomNormal") {
        Some(a.sizes("shape")?.ok_or_else(|| {
            metal_mps_ir::Error::InvalidModel(format!(
                "{}: attribute 'shape' is required",
                cx.op_type
            ))
        })?)
    } else {
        None
    };
    let dtype = match a.opt_int("dtype")? {
        Some(c) => Some(DType::from_onnx_code(c)?),
        None if shape.is_some() => Some(DType::F32),
        None => None,
    };
    let seed = match a.opt_float("seed")? {
        Some(s) => u64::from(s.to_bits()) ^ 0x5EED_0000_0000_0000,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x1234_5678),
    };
    Ok(Op::Dyn(DynOp::new(Random {
        name: cx.op_type.to_string(),
        dist,
        dtype,
        shape,
        state: AtomicU64::new(seed),
    })))
}

impl Random {
    fn out_dtype(&self, input: Option<DType>) -> Result<DType> {
        let d = match (self.dtype, input) {
            (Some(d), _) => d,
            (None, Some(d)) => d,
            (None, None) => DType::F32,
        };
        if self.dist == Dist::Bernoulli {
            if let Some(i) = input {
                check_float(&self.name, i)?;
            }
            return Ok(d);
        }
        check_float(&self.name, d)?;
        Ok(d)
    }

    fn draw(&self, p: f64) -> f64 {
        match self.dist {
            Dist::Uniform { low, high } => low + (high - low) * unit(&self.state),
            Dist::Normal { mean, scale } => {
                // Box-Muller.
                let u1 = 1.0 - unit(&self.state);
                let u2 = unit(&self.state);
                mean + scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            }
            Dist::Bernoulli => {
                if unit(&self.state) < p {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

fn fill<T: Element>(vals: &[f64], shape: Vec<usize>, out: &mut Out) -> Result<Tensor> {
    let mut y = out.tensor(0, T::DTYPE, shape)?;
    y.as_slice_mut::<T>()?
        .iter_mut()
        .zip(vals)
        .for_each(|(o, &v)| *o = T::from_f64(v));
    Ok(y)
}

impl Operator for Random {
    fn name(&self) -> &str {
        &self.name
    }

    fn deterministic(&self) -> bool {
        false
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        if let Some(s) = &self.shape {
            let d = self.out_dtype(None)?;
            return Ok(vec![(d, Some(s.iter().map(|&n| Dim::Fixed(n)).collect()))]);
        }
        let x = known(ins, 0)?;
        Ok(vec![like(x, self.out_dtype(Some(x.dtype))?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (shape, probs, d) = match &self.shape {
            Some(s) => (s.clone(), None, self.out_dtype(None)?),
            None => {
                let x = arg(ins, 0)?;
                let d = self.out_dtype(Some(x.dtype()))?;
                let p = (self.dist == Dist::Bernoulli).then(|| x.to_f64_vec());
                (x.shape().to_vec(), p, d)
            }
        };
        let n = checked_numel(&shape)?;
        let vals: Vec<f64> = (0..n)
            .map(|i| self.draw(probs.as_ref().map_or(0.0, |p| p[i])))
            .collect();
        let y = dispatch_dtype!(d, T => fill::<T>(&vals, shape, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
