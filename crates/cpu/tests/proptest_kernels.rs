//! Property tests of the CPU kernels against naive reference implementations.
//!
//! The references below are deliberately simple (nested loops in f64) and share
//! no code with the crate: broadcasting, output-size and padding rules are
//! written out again from the ONNX specification.

use metal_mps_cpu::{eval_op, Out};
use metal_mps_ir::{
    Activation, AutoPad, BinaryOp, ConvAttrs, DType, Op, PoolAttrs, PoolKind, Storage, Tensor,
    UnaryOp, Window,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed};

/// A fixed configuration: 64 cases from a fixed seed, so every run (and CI)
/// checks the same cases. `PROPTEST_CASES` / `PROPTEST_RNG_SEED` override them
/// for a longer local exploration.
fn config() -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("PROPTEST_CASES").map_or(64, |c| c as u32),
        // Hermetic: no regression files written next to the tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(0x6d65_7461_6c5f_6d70)),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// SplitMix64: data for a case comes from one seed, so proptest only has to
/// generate (and shrink) the geometry.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), on a grid of 1/1024 so values are exact in f32.
    fn unit(&mut self) -> f32 {
        ((self.next_u64() % 2048) as i64 - 1024) as f32 / 1024.0
    }

    /// Uniform integer in [lo, hi].
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn f32s(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides.
fn row_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// An `Out` whose single buffer is already full of garbage (0xFF bytes: NaN
/// for floats, -1 for integers), so a kernel that skips an element is caught.
fn dirty_out(bytes: usize) -> Out {
    let mut s = Storage::zeroed(bytes).unwrap();
    s.as_bytes_mut().fill(0xFF);
    Out::reusing(vec![s])
}

fn run1(
    op: &Op,
    inputs: &[Option<&Tensor>],
    out_bytes_hint: usize,
) -> metal_mps_ir::Result<Tensor> {
    let mut out = dirty_out(out_bytes_hint);
    let mut outs = eval_op(op, inputs, 1, &mut out)?;
    assert_eq!(outs.len(), 1, "{op:?} returned {} outputs", outs.len());
    Ok(outs.remove(0))
}

fn close(got: f64, want: f64, rtol: f64, atol: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= atol + rtol * want.abs()
}

fn assert_all_close(
    what: &str,
    got: &[f64],
    want: &[f64],
    rtol: f64,
    atol: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: element count", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            close(g, w, rtol, atol),
            "{}: element {} is {} but the reference says {}",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// (a) Broadcasting binary ops
// ---------------------------------------------------------------------------

/// Numpy broadcasting of two shapes, written out: right-aligned, 1 stretches.
fn ref_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (a, b) = (pad(a), pad(b));
    a.iter()
        .zip(&b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Element of `src` (shape `s`) read at output multi-index `idx` (rank ≥ s's rank).
fn broadcast_index(s: &[usize], idx: &[usize]) -> usize {
    let off = idx.len() - s.len();
    let st = row_strides(s);
    (0..s.len())
        .map(|d| if s[d] == 1 { 0 } else { idx[off + d] * st[d] })
        .sum()
}

fn ref_binary(
    op: BinaryOp,
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    int: bool,
) -> (Vec<usize>, Vec<f64>) {
    let shape = ref_broadcast(sa, sb).expect("compatible");
    let mut out = Vec::with_capacity(numel(&shape));
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel(&shape) {
        let x = a[broadcast_index(sa, &idx)];
        let y = b[broadcast_index(sb, &idx)];
        let v = match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            // Integer division truncates toward zero (C semantics, and ONNX's reference).
            BinaryOp::Div if int => (x / y).trunc(),
            BinaryOp::Div => x / y,
            BinaryOp::Pow => unreachable!(),
        };
        out.push(v);
        // Odometer increment.
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (shape, out)
}

#[derive(Clone, Debug)]
struct BinaryCase {
    op: BinaryOp,
    dtype: DType,
    a: Vec<usize>,
    b: Vec<usize>,
    seed: u64,
}

fn binary_case() -> impl Strategy<Value = BinaryCase> {
    let op = prop_oneof![
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul),
        Just(BinaryOp::Div)
    ];
    let dtype = prop_oneof![Just(DType::F32), Just(DType::I32), Just(DType::I64)];
    // A full output shape, then per operand: how many leading dims to drop and
    // which dims to replace by 1.
    let shape = prop::collection::vec(1usize..=4, 0..=4);
    (
        op,
        dtype,
        shape,
        0usize..=4,
        0usize..=4,
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(|(op, dtype, full, drop_a, drop_b, ones_a, ones_b, seed)| {
            let derive = |drop: usize, ones: u8| -> Vec<usize> {
                let drop = drop.min(full.len());
                full[drop..]
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if ones & (1 << i) != 0 { 1 } else { d })
                    .collect()
            };
            BinaryCase {
                op,
                dtype,
                a: derive(drop_a, ones_a),
                b: derive(drop_b, ones_b),
                seed,
            }
        })
}

fn make_operand(dtype: DType, shape: &[usize], rng: &mut Rng, divisor: bool) -> (Tensor, Vec<f64>) {
    let n = numel(shape);
    match dtype {
        DType::F32 => {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let x = rng.unit() * 8.0;
                    if divisor && x == 0.0 {
                        0.5
                    } else {
                        x
                    }
                })
                .collect();
            let f = v.iter().map(|&x| x as f64).collect();
            (Tensor::from_vec(shape.to_vec(), v).unwrap(), f)
        }
        DType::I32 => {
            let v: Vec<i32> = (0..n)
                .map(|_| {
                    let x = rng.int(-100, 100) as i32;
                    if divisor && x == 0 {
                        7
                    } else {
                        x
                    }
                })
                .collect();
            let f = v.iter().map(|&x| x as f64).collect();
            (Tensor::from_vec(shape.to_vec(), v).unwrap(), f)
        }
        DType::I64 => {
            let v: Vec<i64> = (0..n)
                .map(|_| {
                    let x = rng.int(-1_000_000, 1_000_000);
                    if divisor && x == 0 {
                        -3
                    } else {
                        x
                    }
                })
                .collect();
            let f = v.iter().map(|&x| x as f64).collect();
            (Tensor::from_vec(shape.to_vec(), v).unwrap(), f)
        }
        other => unreachable!("{other}"),
    }
}

fn check_binary(case: &BinaryCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let (a, av) = make_operand(case.dtype, &case.a, &mut rng, false);
    let (b, bv) = make_operand(case.dtype, &case.b, &mut rng, case.op == BinaryOp::Div);
    let int = case.dtype != DType::F32;
    let (shape, want) = ref_binary(case.op, &av, &case.a, &bv, &case.b, int);
    let bytes = numel(&shape) * case.dtype.size();
    let y = run1(&Op::Binary(case.op), &[Some(&a), Some(&b)], bytes).unwrap();
    prop_assert_eq!(y.dtype(), case.dtype);
    prop_assert_eq!(
        y.shape(),
        &shape[..],
        "{:?} {:?} {:?}",
        case.op,
        case.a,
        case.b
    );
    // +, -, ×, ÷ of f32 operands computed in f64 and rounded to f32 are the
    // correctly rounded f32 results, so equality is exact; integers are exact too.
    let want: Vec<f64> = if int {
        want
    } else {
        want.iter().map(|&v| v as f32 as f64).collect()
    };
    assert_all_close(
        &format!("{:?} {} {:?} {:?}", case.op, case.dtype, case.a, case.b),
        &y.to_f64_vec(),
        &want,
        0.0,
        0.0,
    )?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_broadcast_matches_reference(case in binary_case()) {
        check_binary(&case)?;
    }

    #[test]
    fn binary_incompatible_shapes_are_errors(
        op in prop_oneof![Just(BinaryOp::Add), Just(BinaryOp::Mul)],
        lead in prop::collection::vec(1usize..=3, 0..=2),
        x in 2usize..=4,
        step in 1usize..=2,
    ) {
        // Two different sizes, neither 1.
        let y = 2 + (x - 2 + step) % 3;
        let mut sa = lead.clone();
        sa.push(x);
        let mut sb = lead;
        sb.push(y);
        let a = Tensor::zeros(DType::F32, sa).unwrap();
        let b = Tensor::zeros(DType::F32, sb).unwrap();
        let r = eval_op(&Op::Binary(op), &[Some(&a), Some(&b)], 1, &mut Out::fresh());
        prop_assert!(r.is_err());
    }
}

// ---------------------------------------------------------------------------
// (b) Conv 2-D
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ConvCase {
    n: usize,
    groups: usize,
    c_per_group: usize,
    m_per_group: usize,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// [top, left, bottom, right] (ONNX order: begins then ends).
    pads: [usize; 4],
    auto_pad: AutoPad,
    bias: bool,
    /// A residual input added before the activation (as the fusion pass builds it).
    residual: bool,
    /// The fused activation (applied after the residual).
    activation: Activation,
    /// A fused 2×2, stride-2 max pool.
    pool: bool,
    /// Whether `kernel_shape` is given (it may be left for the weight to define).
    explicit_kernel: bool,
    seed: u64,
}

fn auto_pad() -> impl Strategy<Value = AutoPad> {
    prop_oneof![
        3 => Just(AutoPad::NotSet),
        1 => Just(AutoPad::Valid),
        1 => Just(AutoPad::SameUpper),
        1 => Just(AutoPad::SameLower),
    ]
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 1usize..=3, 1usize..=2, 1usize..=2),
        (1usize..=9, 1usize..=24),
        (
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [1usize..=2, 1usize..=2],
        ),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        auto_pad(),
        (any::<bool>(), any::<bool>(), any::<u64>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(sizes, plane, window, pads, auto_pad, options, (residual, relu, pool))| {
                let activation = if relu { RELU } else { Activation::None };
                case_of(
                    sizes,
                    plane,
                    window,
                    pads,
                    auto_pad,
                    options,
                    (residual, activation, pool),
                )
            },
        )
}

/// The [`ConvCase`] of a strategy's draw: `(n, groups, c_per_group,
/// m_per_group)`, `(h, w)`, `(kernel, strides, dilations)`, pads, auto_pad,
/// `(bias, explicit_kernel, seed)`, `(residual, activation, pool)`.
#[allow(clippy::type_complexity)]
fn case_of(
    (n, groups, c_per_group, m_per_group): (usize, usize, usize, usize),
    (h, w): (usize, usize),
    (kernel, strides, dilations): ([usize; 2], [usize; 2], [usize; 2]),
    pads: [usize; 4],
    auto_pad: AutoPad,
    (bias, explicit_kernel, seed): (bool, bool, u64),
    (residual, activation, pool): (bool, Activation, bool),
) -> ConvCase {
    ConvCase {
        n,
        groups,
        c_per_group,
        m_per_group,
        h,
        w,
        kernel,
        strides,
        dilations,
        pads,
        auto_pad,
        bias,
        residual,
        activation,
        pool,
        explicit_kernel,
        seed,
    }
}

/// Output size and begin pad of one spatial axis by ONNX's rules (floor mode);
/// `None` when the kernel does not fit the padded input.
fn ref_conv_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    begin: usize,
    end: usize,
    auto: AutoPad,
) -> Option<(usize, usize)> {
    let extent = dilation * (kernel - 1) + 1;
    match auto {
        AutoPad::NotSet => {
            let padded = input + begin + end;
            (padded >= extent).then(|| ((padded - extent) / stride + 1, begin))
        }
        AutoPad::Valid => (input >= extent).then(|| ((input - extent) / stride + 1, 0)),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let needed = (out - 1) * stride + extent;
            let total = needed.saturating_sub(input);
            // SAME_UPPER puts the odd pad at the end, SAME_LOWER at the beginning.
            let begin = if auto == AutoPad::SameUpper {
                total / 2
            } else {
                total.div_ceil(2)
            };
            Some((out, begin))
        }
    }
}

/// Direct convolution, f64 accumulation. Returns the output shape and values.
fn ref_conv(
    c: &ConvCase,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Option<(Vec<usize>, Vec<f64>)> {
    let (cin, m) = (c.groups * c.c_per_group, c.groups * c.m_per_group);
    let (oh, pt) = ref_conv_axis(
        c.h,
        c.kernel[0],
        c.strides[0],
        c.dilations[0],
        c.pads[0],
        c.pads[2],
        c.auto_pad,
    )?;
    let (ow, pl) = ref_conv_axis(
        c.w,
        c.kernel[1],
        c.strides[1],
        c.dilations[1],
        c.pads[1],
        c.pads[3],
        c.auto_pad,
    )?;
    let [kh, kw] = c.kernel;
    let mut y = vec![0f64; c.n * m * oh * ow];
    for n in 0..c.n {
        for oc in 0..m {
            let g = oc / c.m_per_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc] as f64);
                    for icg in 0..c.c_per_group {
                        let ic = g * c.c_per_group + icg;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * c.strides[0] + ky * c.dilations[0]) as i64 - pt as i64;
                                let ix =
                                    (ox * c.strides[1] + kx * c.dilations[1]) as i64 - pl as i64;
                                if iy < 0 || ix < 0 || iy >= c.h as i64 || ix >= c.w as i64 {
                                    continue;
                                }
                                let xv = x[((n * cin + ic) * c.h + iy as usize) * c.w + ix as usize]
                                    as f64;
                                let wv = w[((oc * c.c_per_group + icg) * kh + ky) * kw + kx] as f64;
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * m + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    Some((vec![c.n, m, oh, ow], y))
}

const RELU: Activation = Activation::Unary(UnaryOp::Relu);

/// The fused activations the convolution tests use, written out from the
/// ONNX operators' definitions.
fn ref_activation(a: Activation, y: f64) -> f64 {
    match a {
        Activation::None => y,
        Activation::Unary(UnaryOp::Relu) => y.max(0.0),
        Activation::Unary(UnaryOp::Clamp { min, max }) => y.max(min as f64).min(max as f64),
        Activation::Unary(UnaryOp::LeakyRelu { alpha }) => {
            if y < 0.0 {
                alpha as f64 * y
            } else {
                y
            }
        }
        Activation::Unary(UnaryOp::HardSwish) => y * (y / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Unary(UnaryOp::Sigmoid) => 1.0 / (1.0 + (-y).exp()),
        other => unimplemented!("no reference for {other:?}"),
    }
}

/// Max over 2×2 windows with stride 2 of `[n, c, h, w]`, rounding down.
fn ref_max_pool_2x2(shape: &[usize], y: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let (h, w) = (shape[2], shape[3]);
    let (ph, pw) = (h / 2, w / 2);
    let mut out = Vec::new();
    for plane in y.chunks(h * w).take(shape[0] * shape[1]) {
        for py in 0..ph {
            for px in 0..pw {
                let at = |dy: usize, dx: usize| plane[(2 * py + dy) * w + 2 * px + dx];
                out.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    (vec![shape[0], shape[1], ph, pw], out)
}

fn check_conv(c: &ConvCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let (cin, m) = (c.groups * c.c_per_group, c.groups * c.m_per_group);
    let x_shape = vec![c.n, cin, c.h, c.w];
    let w_shape = vec![m, c.c_per_group, c.kernel[0], c.kernel[1]];
    let xv = rng.f32s(numel(&x_shape), 1.0);
    let wv = rng.f32s(numel(&w_shape), 1.0);
    let bv = rng.f32s(m, 1.0);
    let x = Tensor::from_vec(x_shape, xv.clone()).unwrap();
    let w = Tensor::from_vec(w_shape, wv.clone()).unwrap();
    let b = Tensor::from_vec(vec![m], bv.clone()).unwrap();
    let op = Op::Conv(ConvAttrs {
        window: Window {
            kernel: if c.explicit_kernel {
                c.kernel.to_vec()
            } else {
                vec![]
            },
            strides: c.strides.to_vec(),
            dilations: c.dilations.to_vec(),
            pads: if c.auto_pad == AutoPad::NotSet {
                c.pads.to_vec()
            } else {
                vec![]
            },
            auto_pad: c.auto_pad,
            ceil_mode: false,
        },
        group: c.groups,
        activation: c.activation,
        max_pool_2x2: c.pool,
    });
    let mut want = ref_conv(c, &xv, &wv, c.bias.then_some(&bv[..]));
    // The residual has the output's shape (none when the convolution fails).
    let residual = match (&mut want, c.residual) {
        (Some((shape, y)), true) => {
            let r = rng.f32s(numel(shape), 1.0);
            y.iter_mut().zip(&r).for_each(|(y, &r)| *y += r as f64);
            Some(Tensor::from_vec(shape.clone(), r).unwrap())
        }
        _ => None,
    };
    if let Some((_, y)) = &mut want {
        y.iter_mut()
            .for_each(|y| *y = ref_activation(c.activation, *y));
    }
    if c.pool {
        want = want.map(|(shape, y)| ref_max_pool_2x2(&shape, &y));
    }
    let inputs = [
        Some(&x),
        Some(&w),
        if c.bias { Some(&b) } else { None },
        residual.as_ref(),
    ];
    let bytes = want.as_ref().map_or(64, |(shape, _)| 4 * numel(shape));
    let got = run1(&op, &inputs, bytes);
    match want {
        None => prop_assert!(
            got.is_err(),
            "kernel larger than the padded input must fail: {:?}",
            c
        ),
        Some((shape, want)) => {
            let y = got.map_err(|e| TestCaseError::fail(format!("{c:?}: {e}")))?;
            prop_assert_eq!(y.shape(), &shape[..], "{:?}", c);
            assert_all_close(&format!("{c:?}"), &y.to_f64_vec(), &want, 1e-4, 1e-5)?;
        }
    }
    Ok(())
}

/// A 1-D convolution (`[N, C, W]` input) against the 2-D reference of the
/// same case at height 1; `c` has height 1 and a `1×k` kernel.
fn check_conv_1d(c: &ConvCase) {
    assert!(c.h == 1 && c.kernel[0] == 1 && c.pads[0] + c.pads[2] == 0 && !c.pool);
    let mut rng = Rng(c.seed);
    let (cin, m) = (c.groups * c.c_per_group, c.groups * c.m_per_group);
    let xv = rng.f32s(c.n * cin * c.w, 1.0);
    let wv = rng.f32s(m * c.c_per_group * c.kernel[1], 1.0);
    let bv = rng.f32s(m, 1.0);
    let (shape4, mut want) = ref_conv(c, &xv, &wv, Some(&bv)).expect("a valid case");
    let shape = vec![shape4[0], shape4[1], shape4[3]];
    let r = rng.f32s(numel(&shape), 1.0);
    want.iter_mut()
        .zip(&r)
        .for_each(|(y, &r)| *y = (*y + r as f64).max(0.0));
    let op = Op::Conv(ConvAttrs {
        window: Window {
            kernel: vec![c.kernel[1]],
            strides: vec![c.strides[1]],
            dilations: vec![c.dilations[1]],
            pads: vec![c.pads[1], c.pads[3]],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        },
        group: c.groups,
        activation: Activation::Unary(UnaryOp::Relu),
        max_pool_2x2: false,
    });
    let x = Tensor::from_vec(vec![c.n, cin, c.w], xv).unwrap();
    let w = Tensor::from_vec(vec![m, c.c_per_group, c.kernel[1]], wv).unwrap();
    let b = Tensor::from_vec(vec![m], bv).unwrap();
    let residual = Tensor::from_vec(shape.clone(), r).unwrap();
    let inputs = [Some(&x), Some(&w), Some(&b), Some(&residual)];
    let y = run1(&op, &inputs, 4 * numel(&shape)).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert_eq!(y.shape(), &shape[..], "{c:?}");
    if let Err(e) = assert_all_close(&format!("{c:?}"), &y.to_f64_vec(), &want, 1e-4, 1e-5) {
        panic!("{e}");
    }
}

#[test]
fn one_d_convolutions_take_every_path() {
    for c in [
        // Few output pixels, many channels: the pixel-major product.
        big_conv([2, 1, 20, 64], [1, 40], [1, 3], [1, 1], [0, 1, 0, 1]),
        // Stride 1 with a window: the direct path; strided: phase planes.
        big_conv([1, 1, 6, 10], [1, 300], [1, 5], [1, 1], [0, 2, 0, 2]),
        big_conv([1, 2, 3, 8], [1, 257], [1, 7], [1, 2], [0, 3, 0, 3]),
        // Pointwise, and strided with many channels: im2col.
        big_conv([1, 1, 16, 8], [1, 100], [1, 1], [1, 1], [0, 0, 0, 0]),
        big_conv([1, 1, 16, 70], [1, 200], [1, 3], [1, 2], [0, 1, 0, 1]),
    ] {
        check_conv_1d(&c);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conv2d_matches_direct_convolution(c in conv_case()) {
        check_conv(&c)?;
    }
}

/// Depthwise convolutions (one input channel per group, a channel multiplier
/// of 1 or 2): every kernel size up to 7, stride up to 3, dilation up to 2,
/// uneven pads and auto_pad, widths under a vector, each fused form.
fn depthwise_case() -> impl Strategy<Value = ConvCase> {
    let activation = prop_oneof![
        Just(Activation::None),
        Just(RELU),
        Just(Activation::Unary(UnaryOp::Clamp { min: 0.0, max: 0.5 })),
        Just(Activation::Unary(UnaryOp::LeakyRelu { alpha: 0.1 })),
        Just(Activation::Unary(UnaryOp::HardSwish)),
        Just(Activation::Unary(UnaryOp::Sigmoid)),
    ];
    (
        (1usize..=2, 2usize..=6, 1usize..=2),
        (1usize..=12, 1usize..=40),
        (
            [1usize..=7, 1usize..=7],
            [1usize..=3, 1usize..=3],
            [1usize..=2, 1usize..=2],
        ),
        [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        auto_pad(),
        (any::<bool>(), any::<bool>(), any::<u64>()),
        (any::<bool>(), activation, prop::bool::weighted(0.15)),
    )
        .prop_map(
            |((n, groups, mg), plane, window, pads, auto_pad, options, fused)| {
                case_of(
                    (n, groups, 1, mg),
                    plane,
                    window,
                    pads,
                    auto_pad,
                    options,
                    fused,
                )
            },
        )
}

/// Depthwise convolutions of 32 or more channels on small planes, which the
/// AVX-512 kernel takes 16 channels at a time (the rest plane by plane) when
/// that makes at least two tasks per thread: a multiplier of 1, kernels up to
/// 5, stride and dilation up to 2, each fused form.
fn depthwise_lanes_case() -> impl Strategy<Value = ConvCase> {
    let activation = prop_oneof![
        Just(Activation::None),
        Just(RELU),
        Just(Activation::Unary(UnaryOp::Clamp {
            min: -0.2,
            max: 0.5
        })),
        Just(Activation::Unary(UnaryOp::HardSwish)),
    ];
    (
        (1usize..=2, 32usize..=72),
        (1usize..=12, 1usize..=30),
        (
            [1usize..=5, 1usize..=5],
            [1usize..=2, 1usize..=2],
            [1usize..=2, 1usize..=2],
        ),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        auto_pad(),
        (any::<bool>(), any::<bool>(), any::<u64>()),
        (prop::bool::weighted(0.2), activation),
    )
        .prop_map(
            |((n, groups), plane, window, pads, auto_pad, options, (residual, activation))| {
                case_of(
                    (n, groups, 1, 1),
                    plane,
                    window,
                    pads,
                    auto_pad,
                    options,
                    (residual, activation, false),
                )
            },
        )
}

/// 1-D depthwise convolutions (height 1, a `1×k` kernel).
fn depthwise_1d_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 2usize..=5, 1usize..=2),
        (1usize..=7, 1usize..=3, 1usize..=2),
        (1usize..=50, 0usize..=3, 0usize..=3, any::<u64>()),
    )
        .prop_filter_map(
            "kernel wider than the padded input",
            |((n, groups, mg), (k, stride, dilation), (w, left, right, seed))| {
                (w + left + right > dilation * (k - 1)).then(|| ConvCase {
                    dilations: [1, dilation],
                    seed,
                    ..big_conv(
                        [n, groups, 1, mg],
                        [1, w],
                        [1, k],
                        [1, stride],
                        [0, left, 0, right],
                    )
                })
            },
        )
}

proptest! {
    #![proptest_config(Config { cases: 256, ..config() })]

    #[test]
    fn depthwise_conv_matches_direct_convolution(c in depthwise_case()) {
        check_conv(&c)?;
    }

    #[test]
    fn depthwise_conv1d_matches_direct_convolution(c in depthwise_1d_case()) {
        check_conv_1d(&c);
    }
}

proptest! {
    #![proptest_config(Config { cases: 96, ..config() })]

    #[test]
    fn depthwise_lanes_match_direct_convolution(c in depthwise_lanes_case()) {
        // One thread: two tasks are enough for the lanes kernel.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        one.install(|| check_conv(&c))?;
    }
}

#[test]
fn large_depthwise_convolutions() {
    let clip6 = Activation::Unary(UnaryOp::Clamp { min: 0.0, max: 6.0 });
    let cases = [
        // MobileNet's 3×3 stride 1 and 2, EfficientNet's 5×5, a 7×7 plane
        // (flat runs shorter than a chunk), a channel multiplier of 3.
        ConvCase {
            activation: clip6,
            ..big_conv([2, 24, 1, 1], [56, 56], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        ConvCase {
            activation: clip6,
            ..big_conv([1, 16, 1, 1], [57, 56], [3, 3], [2, 2], [1, 1, 1, 1])
        },
        ConvCase {
            residual: true,
            ..big_conv([1, 8, 1, 1], [28, 28], [5, 5], [1, 1], [2, 2, 2, 2])
        },
        ConvCase {
            activation: RELU,
            ..big_conv([2, 40, 1, 1], [7, 7], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        big_conv([1, 5, 1, 3], [33, 70], [3, 5], [2, 3], [0, 2, 1, 0]),
        // Huge pads and dilation: phase planes far larger than the planes,
        // left to the matrix product.
        ConvCase {
            dilations: [3000, 1],
            ..big_conv([1, 3, 1, 1], [2, 40], [2, 3], [1, 1], [2999, 1, 0, 1])
        },
    ];
    for c in &cases {
        if let Err(e) = check_conv(c) {
            panic!("{c:?}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// (c) MaxPool / AveragePool 2-D
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct PoolCase {
    kind: PoolKind,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    ceil_mode: bool,
    count_include_pad: bool,
    seed: u64,
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        prop_oneof![Just(PoolKind::Max), Just(PoolKind::Average)],
        (1usize..=2, 1usize..=3, 1usize..=9, 1usize..=9),
        (
            [1usize..=3, 1usize..=3],
            [1usize..=3, 1usize..=3],
            [1usize..=2, 1usize..=2],
        ),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                kind,
                (n, c, h, w),
                (kernel, strides, mut dilations),
                mut pads,
                (ceil_mode, count_include_pad, seed),
            )| {
                if kind == PoolKind::Average {
                    dilations = [1, 1];
                }
                // ONNX requires each pad to be smaller than the (dilated) kernel extent.
                for (i, p) in pads.iter_mut().enumerate() {
                    let extent = dilations[i % 2] * (kernel[i % 2] - 1) + 1;
                    *p = (*p).min(extent - 1);
                }
                PoolCase {
                    kind,
                    n,
                    c,
                    h,
                    w,
                    kernel,
                    strides,
                    dilations,
                    pads,
                    ceil_mode,
                    count_include_pad,
                    seed,
                }
            },
        )
}

/// Output size of one axis by ONNX's pooling rules; `None` when the window
/// does not fit the padded input.
fn ref_pool_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    begin: usize,
    end: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let extent = dilation * (kernel - 1) + 1;
    let padded = input + begin + end;
    if padded < extent {
        return None;
    }
    let span = (padded - extent) as f64 / stride as f64;
    let mut out = if ceil_mode {
        span.ceil() as usize + 1
    } else {
        span.floor() as usize + 1
    };
    // With ceil_mode, a window must start inside the input or its left padding.
    if ceil_mode && (out - 1) * stride >= input + begin {
        out -= 1;
    }
    Some(out)
}

fn ref_pool(p: &PoolCase, x: &[f32]) -> Option<(Vec<usize>, Vec<f64>)> {
    let oh = ref_pool_axis(
        p.h,
        p.kernel[0],
        p.strides[0],
        p.dilations[0],
        p.pads[0],
        p.pads[2],
        p.ceil_mode,
    )?;
    let ow = ref_pool_axis(
        p.w,
        p.kernel[1],
        p.strides[1],
        p.dilations[1],
        p.pads[1],
        p.pads[3],
        p.ceil_mode,
    )?;
    let (pt, pl, pb, pr) = (
        p.pads[0] as i64,
        p.pads[1] as i64,
        p.pads[2] as i64,
        p.pads[3] as i64,
    );
    let (h, w) = (p.h as i64, p.w as i64);
    let mut y = Vec::with_capacity(p.n * p.c * oh * ow);
    for plane in 0..p.n * p.c {
        let xp = &x[plane * p.h * p.w..][..p.h * p.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut max = f64::NEG_INFINITY;
                let (mut sum, mut real, mut in_padded) = (0f64, 0usize, 0usize);
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy = (oy * p.strides[0] + ky * p.dilations[0]) as i64 - pt;
                        let ix = (ox * p.strides[1] + kx * p.dilations[1]) as i64 - pl;
                        // Positions inside the padded extent [-begin, input + end).
                        if iy >= -pt && iy < h + pb && ix >= -pl && ix < w + pr {
                            in_padded += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h || ix >= w {
                            continue;
                        }
                        let v = xp[(iy * w + ix) as usize] as f64;
                        max = max.max(v);
                        sum += v;
                        real += 1;
                    }
                }
                y.push(match p.kind {
                    PoolKind::Max => max,
                    PoolKind::Average => {
                        sum / if p.count_include_pad { in_padded } else { real } as f64
                    }
                });
            }
        }
    }
    Some((vec![p.n, p.c, oh, ow], y))
}

fn check_pool(p: &PoolCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(p.seed);
    let shape = vec![p.n, p.c, p.h, p.w];
    let xv = rng.f32s(numel(&shape), 4.0);
    let x = Tensor::from_vec(shape, xv.clone()).unwrap();
    let op = Op::Pool(PoolAttrs {
        kind: p.kind,
        window: Window {
            kernel: p.kernel.to_vec(),
            strides: p.strides.to_vec(),
            dilations: p.dilations.to_vec(),
            pads: p.pads.to_vec(),
            auto_pad: AutoPad::NotSet,
            ceil_mode: p.ceil_mode,
        },
        count_include_pad: p.count_include_pad,
    });
    let want = ref_pool(p, &xv);
    let bytes = want.as_ref().map_or(64, |(shape, _)| 4 * numel(shape));
    let got = run1(&op, &[Some(&x)], bytes);
    match want {
        None => prop_assert!(
            got.is_err(),
            "window larger than the padded input must fail: {:?}",
            p
        ),
        Some((shape, want)) => {
            let y = got.map_err(|e| TestCaseError::fail(format!("{p:?}: {e}")))?;
            prop_assert_eq!(y.shape(), &shape[..], "{:?}", p);
            assert_all_close(&format!("{p:?}"), &y.to_f64_vec(), &want, 1e-5, 1e-6)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pool2d_matches_reference(p in pool_case()) {
        check_pool(&p)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed cases worth keeping whatever proptest draws
// ---------------------------------------------------------------------------

/// ceil_mode where the last window would start in the right padding: it is dropped.
#[test]
fn ceil_mode_drops_window_starting_in_right_padding() {
    // Width 4, kernel 1, stride 2, pads 0/1: ceil((5 - 1) / 2) + 1 = 3 windows, but
    // the third starts at 4, past the input: 2 remain.
    let x = Tensor::from_vec(vec![1, 1, 1, 4], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
    let op = Op::Pool(PoolAttrs {
        kind: PoolKind::Max,
        window: Window {
            kernel: vec![1, 1],
            strides: vec![1, 2],
            dilations: vec![],
            pads: vec![0, 0, 0, 1],
            auto_pad: AutoPad::NotSet,
            ceil_mode: true,
        },
        count_include_pad: false,
    });
    let y = eval_op(&op, &[Some(&x)], 1, &mut Out::fresh())
        .unwrap()
        .remove(0);
    assert_eq!(y.shape(), &[1, 1, 1, 2]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 3.0]);
}

/// A 1×1 convolution with only end padding: the output grid is larger than the
/// input, so the input cannot serve as the im2col matrix (this once read past
/// the input and panicked).
#[test]
fn pointwise_conv_with_end_pads() {
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 1, 1], vec![2f32]).unwrap();
    let b = Tensor::from_vec(vec![1], vec![0.5f32]).unwrap();
    let op = Op::Conv(ConvAttrs {
        window: Window {
            kernel: vec![],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0, 0, 1, 1],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        },
        group: 1,
        activation: Default::default(),
        max_pool_2x2: false,
    });
    let y = eval_op(&op, &[Some(&x), Some(&w), Some(&b)], 1, &mut Out::fresh())
        .unwrap()
        .remove(0);
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        vec![2.5, 4.5, 0.5, 6.5, 8.5, 0.5, 0.5, 0.5, 0.5]
    );
}

// ---------------------------------------------------------------------------
// Larger fixed cases: the parallel and tiled paths of the kernels
// ---------------------------------------------------------------------------

#[test]
fn large_broadcasts_take_the_parallel_path() {
    // Over 2^15 output elements: the rows are split across threads.
    for (a, b) in [
        (vec![16, 1, 512], vec![1, 8, 512]),
        (vec![64, 1024], vec![1]),
        (vec![1], vec![3, 128, 128]),
        (vec![2, 1, 3, 4096], vec![5, 1, 4096]),
        (vec![40000], vec![40000]),
    ] {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            for dtype in [DType::F32, DType::I64] {
                check_binary(&BinaryCase {
                    op,
                    dtype,
                    a: a.clone(),
                    b: b.clone(),
                    seed: 7,
                })
                .unwrap();
            }
        }
    }
}

/// `[n, groups, channels per group, output channels per group]`, input `[h, w]`, kernel, strides, pads.
fn big_conv(
    [n, groups, cg, mg]: [usize; 4],
    hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
) -> ConvCase {
    ConvCase {
        n,
        groups,
        c_per_group: cg,
        m_per_group: mg,
        h: hw[0],
        w: hw[1],
        kernel,
        strides,
        dilations: [1, 1],
        pads,
        auto_pad: AutoPad::NotSet,
        bias: true,
        residual: false,
        activation: Activation::None,
        pool: false,
        explicit_kernel: true,
        seed: 11,
    }
}

#[test]
fn large_convolutions_take_the_tiled_paths() {
    let cases = [
        // im2col with k = 18: output columns split into several tiles, boundaries mid-row.
        big_conv([1, 1, 2, 3], [64, 70], [3, 3], [1, 1], [1, 1, 1, 1]),
        // Strided, grouped, batched, asymmetric pads, many tiles.
        big_conv([2, 2, 2, 2], [97, 131], [3, 2], [1, 2], [2, 0, 1, 1]),
        // Pointwise (input used as the im2col matrix) over several tiles.
        big_conv([1, 1, 4, 2], [150, 150], [1, 1], [1, 1], [0, 0, 0, 0]),
        big_conv([2, 1, 1, 3], [300, 301], [1, 1], [1, 1], [0, 0, 0, 0]),
        // 1×1 with end pads: not pointwise.
        big_conv([1, 1, 4, 2], [150, 150], [1, 1], [1, 1], [0, 0, 1, 2]),
        // Many small parallel tasks (n·group ≥ 2·threads).
        big_conv([2, 4, 1, 1], [40, 40], [3, 3], [2, 2], [1, 1, 1, 1]),
        // Stride 1, no im2col: rows of whole tiles (32 wide) stored straight
        // to the output, and rows of 30 computed along the padded rows, both
        // with a residual and ReLU; several row panels and channel splits.
        ConvCase {
            residual: true,
            activation: RELU,
            ..big_conv([2, 1, 20, 40], [32, 32], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        ConvCase {
            residual: true,
            activation: RELU,
            ..big_conv([1, 1, 20, 70], [30, 30], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        big_conv([1, 1, 8, 64], [7, 7], [3, 3], [1, 1], [1, 1, 1, 1]),
        // Fused 2×2 max pool: the Simple CNN's shape (scaled down), odd
        // sizes (last row and column dropped), and a strided convolution
        // (pooled after the whole product).
        ConvCase {
            activation: RELU,
            pool: true,
            ..big_conv([2, 1, 3, 16], [64, 64], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        ConvCase {
            residual: true,
            activation: RELU,
            pool: true,
            ..big_conv([1, 1, 20, 40], [33, 31], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        ConvCase {
            pool: true,
            ..big_conv([1, 2, 3, 5], [45, 50], [3, 3], [2, 2], [1, 1, 1, 1])
        },
        // Strided, read from phase planes: a ResNet stem (7×7, stride 2),
        // a 3×3 stride-2 convolution to a 7×7 output, a 1×1 stride-2
        // projection, stride 3 by 2 with uneven pads, a residual and ReLU,
        // and stride 2 with dilation 2 (every tap in one phase).
        big_conv([1, 1, 3, 20], [64, 61], [7, 7], [2, 2], [3, 3, 3, 3]),
        big_conv([1, 1, 16, 30], [14, 14], [3, 3], [2, 2], [1, 1, 1, 1]),
        big_conv([1, 1, 24, 20], [28, 28], [1, 1], [2, 2], [0, 0, 0, 0]),
        ConvCase {
            residual: true,
            activation: RELU,
            ..big_conv([2, 1, 5, 13], [50, 47], [5, 3], [3, 2], [2, 1, 0, 2])
        },
        // Outputs of few pixels and many channels: the pixel-major product
        // (pointwise, 3×3 with a residual and ReLU over two images, strided
        // and grouped with 2 row panels' worth of pixels, a partial last
        // column tile).
        big_conv([1, 1, 40, 64], [7, 7], [1, 1], [1, 1], [0, 0, 0, 0]),
        ConvCase {
            residual: true,
            activation: RELU,
            ..big_conv([2, 1, 24, 80], [7, 7], [3, 3], [1, 1], [1, 1, 1, 1])
        },
        big_conv([1, 2, 6, 70], [8, 7], [3, 3], [2, 2], [1, 1, 0, 1]),
        big_conv([1, 1, 3, 64], [5, 5], [5, 5], [1, 1], [0, 0, 0, 0]),
        // Strided with many output channels: im2col panels.
        big_conv([1, 1, 8, 70], [30, 30], [3, 3], [2, 2], [1, 1, 1, 1]),
        ConvCase {
            dilations: [2, 2],
            ..big_conv([1, 1, 4, 9], [40, 41], [3, 3], [2, 2], [2, 2, 2, 2])
        },
    ];
    for c in &cases {
        if let Err(e) = check_conv(c) {
            panic!("{c:?}: {e}");
        }
    }
}

#[test]
fn large_pools_take_the_parallel_path() {
    let base = PoolCase {
        kind: PoolKind::Max,
        // 2·16 planes of 40×23 outputs: over 2^14 output elements.
        n: 2,
        c: 16,
        h: 40,
        w: 45,
        kernel: [3, 3],
        strides: [1, 2],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        ceil_mode: true,
        count_include_pad: false,
        seed: 5,
    };
    for kind in [PoolKind::Max, PoolKind::Average] {
        for count_include_pad in [false, true] {
            let p = PoolCase {
                kind,
                count_include_pad,
                ..base.clone()
            };
            if let Err(e) = check_pool(&p) {
                panic!("{p:?}: {e}");
            }
        }
    }
}

/// 3×3 stride-1 convolutions with tens of channels (several row panels of
/// the packed product, partial ones), odd and even sizes, every padding.
fn mid_size_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 16usize..=40, 16usize..=40),
        (1usize..=17, 1usize..=17),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        (auto_pad(), any::<bool>(), any::<u64>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((n, cg, mg), (h, w), pads, (auto_pad, bias, seed), (residual, relu, pool))| {
                ConvCase {
                    auto_pad,
                    bias,
                    residual,
                    activation: if relu { RELU } else { Activation::None },
                    pool,
                    seed,
                    ..big_conv([n, 1, cg, mg], [h, w], [3, 3], [1, 1], pads)
                }
            },
        )
}

proptest! {
    #![proptest_config(Config { cases: 24, ..config() })]

    #[test]
    fn mid_size_conv_matches_direct_convolution(c in mid_size_case()) {
        check_conv(&c)?;
    }
}

// ---------------------------------------------------------------------------
// Transpose
// ---------------------------------------------------------------------------

/// A shape of rank 1..=5 (sizes 1..=9, sometimes large enough to be split
/// among threads), a permutation of it, and an element size.
fn transpose_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, DType, u64)> {
    (1usize..=5, any::<bool>())
        .prop_flat_map(|(rank, big)| {
            let dims = prop::collection::vec(1usize..=if big { 40 } else { 9 }, rank);
            let perm = Just((0..rank).collect::<Vec<usize>>()).prop_shuffle();
            let dtype = prop::sample::select(vec![DType::F32, DType::U8, DType::I16, DType::I64]);
            (dims, perm, dtype, any::<u64>())
        })
        .prop_filter("at most 2M elements", |(d, ..)| numel(d) <= 2 << 20)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn transpose_matches_index_arithmetic((shape, perm, dtype, seed) in transpose_case()) {
        let n = numel(&shape);
        let mut rng = Rng(seed);
        let values: Vec<i64> = (0..n).map(|_| rng.int(0, 100)).collect();
        let x = Tensor::from_vec(shape.clone(), values.clone()).unwrap();
        let x = run1(&Op::Cast { to: dtype }, &[Some(&x)], n * 8).unwrap();
        let y = run1(&Op::Transpose { perm: perm.clone() }, &[Some(&x)], n * 8).unwrap();
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        prop_assert_eq!(y.shape(), &out_shape[..]);
        let y = run1(&Op::Cast { to: DType::I64 }, &[Some(&y)], n * 8).unwrap().to_i64_vec().unwrap();
        let (in_strides, out_strides) = (row_strides(&shape), row_strides(&out_shape));
        for (o, &got) in y.iter().enumerate() {
            // Output index → input index through the permutation.
            let src: usize = (0..shape.len())
                .map(|d| (o / out_strides[d]) % out_shape[d] * in_strides[perm[d]])
                .sum();
            prop_assert_eq!(got, values[src], "output element {}", o);
        }
    }
}
