//! The operators of the IR, with their attributes already parsed and defaulted.
//!
//! Opset differences are resolved by the importer: an op here has one meaning.
//! Inputs that ONNX made optional appear as `None` in [`crate::Node::inputs`].

/// Elementwise binary operators with multidirectional broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// Elementwise unary operators (activations included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    LeakyRelu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    /// `x·Φ(x)` with the exact (erf) normal CDF: what `fuse_gelu` makes of
    /// the Div/Erf/Add/Mul/Mul chain exporters write.
    Gelu,
    /// Clip with constant bounds (Clip with runtime bounds stays [`Op::Clip`]):
    /// below `min` becomes `min`, above `max` becomes `max` (so `max` wins
    /// when `min > max`), NaN stays NaN, as numpy's `clip`.
    Clamp {
        min: f32,
        max: f32,
    },
    /// NaN becomes `value`, everything else passes: `Where(IsNaN(x), value, x)`,
    /// which exporters write after a masked softmax ([`crate::passes::replace_nan_guards`]).
    NanTo {
        value: f32,
    },
}

impl UnaryOp {
    /// Only these are allowed on integer tensors.
    pub fn supports_integers(&self) -> bool {
        matches!(
            self,
            UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Clamp { .. }
        )
    }

    /// The scalar function in f64 (DOUBLE tensors); the same formulas as [`UnaryOp::apply_f32`].
    pub fn apply_f64(&self, x: f64) -> f64 {
        match *self {
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                (alpha as f64 * x + beta as f64).clamp(0.0, 1.0)
            }
            UnaryOp::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            UnaryOp::Gelu => crate::math::gelu_f64(x),
            UnaryOp::NanTo { value } => {
                if x.is_nan() {
                    value as f64
                } else {
                    x
                }
            }
            UnaryOp::Clamp { min, max } => {
                let x = if x < min as f64 { min as f64 } else { x };
                if x > max as f64 {
                    max as f64
                } else {
                    x
                }
            }
        }
    }

    /// The scalar function, in f32 (the CPU and GPU engines share its meaning).
    pub fn apply_f32(&self, x: f32) -> f32 {
        match *self {
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            UnaryOp::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            UnaryOp::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            UnaryOp::Gelu => crate::math::gelu_f32(x),
            UnaryOp::NanTo { value } => {
                if x.is_nan() {
                    value
                } else {
                    x
                }
            }
            UnaryOp::Clamp { min, max } => {
                let x = if x < min { min } else { x };
                if x > max {
                    max
                } else {
                    x
                }
            }
        }
    }
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Average,
}

/// Padding rule of convolutions and pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Output = ceil(input / stride); extra padding at the end.
    SameUpper,
    /// Output = ceil(input / stride); extra padding at the start.
    SameLower,
    Valid,
}

/// Geometry shared by Conv and the pools, over the spatial dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Kernel size per spatial dim; empty for Conv until the weight is known.
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads then end pads, ONNX order: `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`.
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl Window {
    /// Output size and begin/end pads of one spatial dim.
    pub fn output_dim(
        &self,
        axis: usize,
        input: usize,
        kernel: usize,
    ) -> crate::Result<(usize, usize, usize)> {
        let stride = self.strides.get(axis).copied().unwrap_or(1);
        let dilation = self.dilations.get(axis).copied().unwrap_or(1);
        if stride == 0 || dilation == 0 {
            return crate::invalid!("strides and dilations must be positive");
        }
        let too_large = || {
            crate::Error::TooLarge(format!(
                "window of kernel {kernel}, stride {stride}, dilation {dilation} and pads {:?} \
                 over an input of {input}",
                self.pads
            ))
        };
        let effective = kernel
            .saturating_sub(1)
            .checked_mul(dilation)
            .and_then(|e| e.checked_add(1))
            .ok_or_else(too_large)?;
        let spatial = self.kernel.len().max(self.pads.len() / 2);
        let (begin, end) = match self.auto_pad {
            AutoPad::NotSet => (
                self.pads.get(axis).copied().unwrap_or(0),
                self.pads.get(axis + spatial).copied().unwrap_or(0),
            ),
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(stride);
                let total = out
                    .saturating_sub(1)
                    .checked_mul(stride)
                    .and_then(|t| t.checked_add(effective))
                    .ok_or_else(too_large)?
                    .saturating_sub(input);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = input
            .checked_add(begin)
            .and_then(|p| p.checked_add(end))
            .ok_or_else(too_large)?;
        if padded < effective {
            return crate::invalid!(
                "kernel extent {effective} is larger than the padded input {padded}"
            );
        }
        let span = padded - effective;
        let mut out = if self.ceil_mode {
            span.div_ceil(stride) + 1
        } else {
            span / stride + 1
        };
        // With ceil_mode, the last window must start inside the input or left padding.
        if self.ceil_mode && (out - 1).saturating_mul(stride) >= input + begin {
            out -= 1;
        }
        Ok((out, begin, end))
    }
}

/// A fused activation applied by the kernel that produces the value.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    Unary(UnaryOp),
}

impl Activation {
    pub fn apply(&self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Unary(u) => u.apply_f32(x),
        }
    }

    pub fn apply_f64(&self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::Unary(u) => u.apply_f64(x),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub window: Window,
    pub group: usize,
    /// Applied after the bias (fusion pass).
    pub activation: Activation,
    /// The activated output is max-pooled over 2×2 windows with stride 2,
    /// rounding down (2-D only; `passes::fuse_max_pool`).
    pub max_pool_2x2: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub window: Window,
    pub count_include_pad: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LrnAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
    pub size: usize,
}

/// One IR operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Inputs: a, b.
    Binary(BinaryOp),
    /// Inputs: x.
    Unary(UnaryOp),
    /// Inputs: x, min?, max? (runtime bounds).
    Clip,
    /// Inputs: one or more, broadcast together.
    Sum,
    /// Inputs: x, w, bias?, residual?. NCHW, 1-D or 2-D spatial. The residual
    /// (output-shaped, from `passes::fuse_residual_add`) is added before the activation.
    Conv(ConvAttrs),
    /// Inputs: x.
    Pool(PoolAttrs),
    /// Inputs: x. Reduces all spatial dims to 1.
    GlobalPool(PoolKind),
    /// Inputs: x, scale, bias, mean, var.
    BatchNorm { epsilon: f32 },
    /// Inputs: x. `legacy`: opset < 13, the input is seen as 2-D `[prod(..axis), prod(axis..)]`.
    Softmax { axis: i64, legacy: bool },
    /// Inputs: a, b, bias? (`[N]`, added to every row of the product before
    /// the activation; from `passes::fuse_matmul_bias`).
    MatMul { activation: Activation },
    /// Inputs: a, b, c?.
    Gemm(GemmAttrs),
    /// Inputs: data, shape.
    Reshape { allowzero: bool },
    /// Inputs: data. `perm` empty means reverse.
    Transpose { perm: Vec<usize> },
    /// Inputs: one or more.
    Concat { axis: i64 },
    /// Inputs: data, split? (sizes). `sizes` from the attribute; otherwise `num_outputs`
    /// equal parts (the last smaller) unless the split input is given.
    Split {
        axis: i64,
        sizes: Option<Vec<i64>>,
        num_outputs: usize,
    },
    /// Inputs: data, axes? (runtime axes, opset 13/18 forms).
    Reduce {
        op: ReduceOp,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// Inputs: x.
    Flatten { axis: i64 },
    /// Inputs: data, axes?.
    Squeeze { axes: Option<Vec<i64>> },
    /// Inputs: data, axes?.
    Unsqueeze { axes: Option<Vec<i64>> },
    /// Inputs: data. Output: INT64 1-D.
    Shape { start: i64, end: Option<i64> },
    /// Inputs: data, indices.
    Gather { axis: i64 },
    /// Inputs: x.
    Cast { to: crate::DType },
    /// Inputs: data, pads?, constant_value?, axes?. Constant mode only.
    Pad { pads: Option<Vec<i64>>, value: f32 },
    /// Inputs: x.
    Lrn(LrnAttrs),
    /// Inputs: x. Inference: the identity.
    Identity,
    /// An operator defined in its own module (`metal-mps-ops`).
    Dyn(crate::DynOp),
}

impl Op {
    /// The ONNX op type name (for messages and `info`).
    pub fn name(&self) -> String {
        match self {
            Op::Binary(b) => format!("{b:?}"),
            Op::Unary(u) => match u {
                UnaryOp::LeakyRelu { .. } => "LeakyRelu".into(),
                UnaryOp::HardSigmoid { .. } => "HardSigmoid".into(),
                UnaryOp::Clamp { .. } => "Clip".into(),
                UnaryOp::NanTo { .. } => "NanTo".into(),
                other => format!("{other:?}"),
            },
            Op::Clip => "Clip".into(),
            Op::Sum => "Sum".into(),
            Op::Conv(c) => with_activation("Conv", c.activation),
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "MaxPool".into(),
                PoolKind::Average => "AveragePool".into(),
            },
            Op::GlobalPool(PoolKind::Max) => "GlobalMaxPool".into(),
            Op::GlobalPool(PoolKind::Average) => "GlobalAveragePool".into(),
            Op::BatchNorm { .. } => "BatchNormalization".into(),
            Op::Softmax { .. } => "Softmax".into(),
            Op::MatMul { activation } => with_activation("MatMul", *activation),
            Op::Gemm(g) => with_activation("Gemm", g.activation),
            Op::Reshape { .. } => "Reshape".into(),
            Op::Transpose { .. } => "Transpose".into(),
            Op::Concat { .. } => "Concat".into(),
            Op::Split { .. } => "Split".into(),
            Op::Reduce { op, .. } => format!("Reduce{op:?}"),
            Op::Flatten { .. } => "Flatten".into(),
            Op::Squeeze { .. } => "Squeeze".into(),
            Op::Unsqueeze { .. } => "Unsqueeze".into(),
            Op::Shape { .. } => "Shape".into(),
            Op::Gather { .. } => "Gather".into(),
            Op::Cast { .. } => "Cast".into(),
            Op::Pad { .. } => "Pad".into(),
            Op::Lrn(_) => "LRN".into(),
            Op::Identity => "Identity".into(),
            Op::Dyn(d) => d.name().to_string(),
        }
    }

    /// Ops that only move or reinterpret data (no arithmetic).
    pub fn is_layout(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Flatten { .. }
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Identity
        )
    }
}

fn with_activation(base: &str, act: Activation) -> String {
    match act {
        Activation::None => base.to_string(),
        Activation::Unary(u) => format!("{base}+{}", Op::Unary(u).name()),
    }
}
