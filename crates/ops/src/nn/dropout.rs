//! Dropout: the identity at inference (the built-in `Op::Identity`, whose
//! optional mask output is all true); with a `training_mode` input, elements
//! are dropped with probability `ratio` at run time when training is on.

use crate::support::{arg, known, like, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{BoolByte, DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

pub fn build(cx: &BuildCx) -> Result<Op> {
    // Before opset 12 the ratio is an attribute and there is no training input.
    if cx.num_inputs < 3 {
        return Ok(Op::Identity);
    }
    Ok(Op::Dyn(DynOp::new(Dropout {
        seed: cx.attrs.opt_int("seed")?,
    })))
}

#[derive(Debug)]
struct Dropout {
    seed: Option<i64>,
}

impl Operator for Dropout {
    fn name(&self) -> &str {
        "Dropout"
    }

    fn deterministic(&self) -> bool {
        false
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let mut out = vec![like(x, x.dtype)];
        if n_out > 1 {
            out.push(like(x, DType::Bool));
        }
        Ok(out)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let ratio = match opt(ins, 1) {
            Some(r) => r.scalar_f64()?,
            None => 0.5,
        };
        let training = match opt(ins, 2) {
            Some(t) => t.scalar_f64()? != 0.0,
            None => false,
        };
        if !(0.0..1.0).contains(&ratio) {
            return metal_mps_ir::invalid!("Dropout: ratio {ratio} is outside [0, 1)");
        }
        let keep: Vec<bool> = if training && ratio > 0.0 {
            let seed = self.seed.map_or_else(entropy, |s| s as u32);
            let mut rng = Mt19937::new(seed);
            (0..x.numel()).map(|_| rng.uniform() >= ratio).collect()
        } else {
            vec![true; x.numel()]
        };
        let scale = 1.0 / (1.0 - if training { ratio } else { 0.0 });
        let values: Vec<f64> = x
            .to_f64_vec()
            .iter()
            .zip(&keep)
            .map(|(&v, &k)| if k { v * scale } else { 0.0 })
            .collect();
        let y = crate::support::from_f64s(x.dtype(), x.shape().to_vec(), &values)?;
        let mut outs = vec![out.copy_of(0, &y, x.shape().to_vec())?];
        if n_out > 1 {
            let mask: Vec<BoolByte> = keep.iter().map(|&k| BoolByte(k as u8)).collect();
            outs.push(Tensor::from_vec(x.shape().to_vec(), mask)?);
        }
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A seed from the clock, for Dropout without a `seed` attribute.
fn entropy() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(5489, |d| d.subsec_nanos())
}

/// The Mersenne Twister with numpy's `RandomState(seed).uniform()` sampling, so
/// that a seeded Dropout drops the elements ONNX's reference implementation drops.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

#[cfg(test)]
mod tests {
    use super::Mt19937;

    #[test]
    fn matches_numpy_random_state() {
        // numpy: np.random.RandomState(0).uniform(0, 1, 3)
        let mut r = Mt19937::new(0);
        let want = [
            0.548_813_503_927_324_8,
            0.715_189_366_372_419_5,
            0.602_763_376_071_643_9,
        ];
        for w in want {
            assert!((r.uniform() - w).abs() < 1e-15);
        }
    }
}
