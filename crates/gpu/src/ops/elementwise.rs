//! Launcher of the fused elementwise kernels (`elementwise.wgsl`,
//! `elementwise_int.wgsl`): a chain of unary and broadcasting binary ops in one pass.

use super::{act_code, grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Result, UnaryOp};

/// Most dims of an elementwise output.
pub const MAX_RANK: usize = 8;
/// Most operands (the chain's start included).
pub const MAX_OPERANDS: usize = 5;
/// Most steps of one chain.
pub const MAX_STEPS: usize = 8;

/// Binary arithmetic of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
}

impl Arith {
    fn code(self) -> u32 {
        match self {
            Arith::Add => 100,
            Arith::Sub => 101,
            Arith::Mul => 102,
            Arith::Div => 103,
            Arith::Pow => 104,
            Arith::Max => 105,
            Arith::Min => 106,
        }
    }
}

/// One step applied to the running value `acc`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    Unary(UnaryOp),
    /// `acc op x[operand]`, or `x[operand] op acc` when `swap`.
    Binary {
        op: Arith,
        operand: usize,
        swap: bool,
    },
}

/// How an operand is indexed from the output's linear index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Same,
    Scalar,
    Strided(Vec<usize>),
    Channel { inner: usize, count: usize },
}

fn mode(shape: &[usize], out: &[usize]) -> Result<Mode> {
    if shape == out {
        return Ok(Mode::Same);
    }
    if shape.iter().product::<usize>() == 1 {
        return Ok(Mode::Scalar);
    }
    if shape.len() > out.len() {
        return Err(Error::Invalid(format!(
            "operand {shape:?} does not broadcast to {out:?}"
        )));
    }
    let pad = out.len() - shape.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(shape.iter().copied())
        .collect();
    let non_one: Vec<usize> = (0..full.len()).filter(|&d| full[d] != 1).collect();
    if let [d] = non_one[..] {
        if full[d] == out[d] {
            return Ok(Mode::Channel {
                inner: out[d + 1..].iter().product(),
                count: out[d],
            });
        }
    }
    super::select::broadcast_strides(shape, out)
        .map(Mode::Strided)
        .ok_or_else(|| Error::Invalid(format!("operand {shape:?} does not broadcast to {out:?}")))
}

/// Whether the integer kernel implements a step.
pub fn int_step_supported(s: &Step) -> bool {
    match s {
        Step::Unary(u) => matches!(u, UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs),
        Step::Binary { op, .. } => !matches!(op, Arith::Pow),
    }
}

/// A fused chain: `y = steps(x0)` over `out` elements. `operands[0]` starts the
/// chain; `dtype` is F32/F16 (computed in f32) or I32/I64 (integer kernel).
pub fn elementwise(
    ctx: &GpuContext,
    dtype: Scalar,
    out: &[usize],
    operands: &[(Binding, &[usize])],
    steps: &[Step],
    y: Binding,
    dummy: &Binding,
) -> Result<Call> {
    if out.len() > MAX_RANK
        || operands.is_empty()
        || operands.len() > MAX_OPERANDS
        || steps.len() > MAX_STEPS
    {
        return Err(Error::Unsupported(format!(
            "an elementwise chain of rank {}, {} operands and {} steps",
            out.len(),
            operands.len(),
            steps.len()
        )));
    }
    let kernel = match dtype {
        Scalar::F32 | Scalar::F16 => Kernel::Elementwise,
        Scalar::I32 | Scalar::I64 => {
            if let Some(s) = steps.iter().find(|s| !int_step_supported(s)) {
                return Err(Error::Unsupported(format!(
                    "{s:?} on integers in the GPU kernel"
                )));
            }
            Kernel::ElementwiseInt
        }
        other => return Err(Error::Unsupported(format!("elementwise ops on {other:?}"))),
    };
    let n = out.iter().product::<usize>();
    let mut key = PipelineKey::new(kernel, Variant::of(dtype), "main");
    let mut strides = vec![0u32; MAX_OPERANDS * MAX_RANK];
    let mut chan = vec![1u32; 2 * 6];
    let mut need_coords = false;
    const MODES: [&str; MAX_OPERANDS] = ["MODE0", "MODE1", "MODE2", "MODE3", "MODE4"];
    for (k, (_, shape)) in operands.iter().enumerate() {
        let code = match mode(shape, out)? {
            Mode::Same => 0,
            Mode::Scalar => 1,
            Mode::Strided(s) => {
                need_coords = true;
                for (d, v) in s.iter().enumerate() {
                    strides[k * MAX_RANK + d] = u32_of(*v, "operand stride")?;
                }
                2
            }
            Mode::Channel { inner, count } => {
                chan[2 * k] = u32_of(inner.max(1), "channel stride")?;
                chan[2 * k + 1] = u32_of(count, "channels")?;
                3
            }
        };
        key = key.with(MODES[k], Const::U32(code));
    }
    key = key
        .with("NEED_COORDS", Const::Bool(need_coords))
        .with("NSTEPS", Const::U32(steps.len() as u32));
    const OP: [&str; 8] = ["OP0", "OP1", "OP2", "OP3", "OP4", "OP5", "OP6", "OP7"];
    const ARG: [&str; 8] = [
        "ARG0", "ARG1", "ARG2", "ARG3", "ARG4", "ARG5", "ARG6", "ARG7",
    ];
    const SWAP: [&str; 8] = [
        "SWAP0", "SWAP1", "SWAP2", "SWAP3", "SWAP4", "SWAP5", "SWAP6", "SWAP7",
    ];
    const PA: [&str; 8] = ["PA0", "PA1", "PA2", "PA3", "PA4", "PA5", "PA6", "PA7"];
    const PB: [&str; 8] = ["PB0", "PB1", "PB2", "PB3", "PB4", "PB5", "PB6", "PB7"];
    for (s, step) in steps.iter().enumerate() {
        match *step {
            Step::Unary(u) => {
                let (code, a, b) = act_code(Some(u));
                key = key.with(OP[s], Const::U32(code));
                if kernel == Kernel::Elementwise {
                    key = key.with(PA[s], Const::F32(a)).with(PB[s], Const::F32(b));
                }
            }
            Step::Binary { op, operand, swap } => {
                if operand == 0 || operand >= operands.len() {
                    return Err(Error::Invalid(format!(
                        "step operand {operand} of {} operands",
                        operands.len()
                    )));
                }
                key = key
                    .with(OP[s], Const::U32(op.code()))
                    .with(ARG[s], Const::U32(operand as u32))
                    .with(SWAP[s], Const::Bool(swap));
            }
        }
    }
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(out.len() as u32)
        .u32(0)
        .u32(0)
        .words(&out.iter().map(|&d| d as u32).collect::<Vec<_>>(), 2, 1)
        .words(&strides, 10, 0)
        .words(&chan, 3, 1)
        .finish();
    let mut bindings: Vec<Binding> = operands.iter().map(|(b, _)| b.clone()).collect();
    while bindings.len() < MAX_OPERANDS {
        bindings.push(dummy.clone());
    }
    bindings.push(y);
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings,
        groups: grid(n as u64)?,
    })
}
