//! Every kernel against a naive Rust reference, on whatever adapter exists
//! (lavapipe in CI). Without an adapter the tests are skipped, unless
//! `METAL_MPS_REQUIRE_GPU=1` makes that a failure.

mod common;

use common::rand;
use metal_mps_gpu::ops::{
    self,
    attention::{Attention, AttentionMask, MaskKind},
    conv::{tap_major_weights, ConvGeometry},
    copy::Region,
    elementwise::{Arith, Step},
    matmul::{Gemm, Tiles},
    pool::PoolGeometry,
    Binding, Call,
};
use metal_mps_gpu::pipeline_cache::Scalar;
use metal_mps_gpu::pool::PooledBuffer;
use metal_mps_gpu::{transfer, GpuContext};
use metal_mps_ir::{f16, ReduceOp, Tensor, UnaryOp};
use std::sync::Arc;

fn ctx() -> Option<Arc<GpuContext>> {
    common::gpu().then(|| GpuContext::shared(None).expect("the adapter opens"))
}

struct Buf {
    buf: PooledBuffer,
    bytes: usize,
}

impl Buf {
    fn b(&self) -> Binding {
        Binding::whole(&self.buf, self.bytes as u64)
    }
}

fn up<T: bytemuck::Pod>(ctx: &GpuContext, v: &[T]) -> Buf {
    let bytes: &[u8] = bytemuck::cast_slice(v);
    Buf {
        buf: transfer::upload(ctx, bytes).unwrap(),
        bytes: bytes.len(),
    }
}

/// `v` uploaded as `dt` (f32, or converted to f16).
fn up_as(ctx: &GpuContext, dt: Scalar, v: &[f32]) -> Buf {
    if dt == Scalar::F16 {
        up(ctx, &to_f16(v))
    } else {
        up(ctx, v)
    }
}

/// Every tile shape and element type the product kernels can run with on this
/// adapter: plain 4x4 and 8x8 tiles in f32 (and f16 with SHADER_F16), split-K
/// over 3 runs (uneven, some empty where K is short) and 2, and cooperative
/// matrices (f16 only, whole K and split in 3; tiles of 8 x 8 fragments and
/// their halves and quarter) where the adapter has them.
fn product_variants(ctx: &GpuContext) -> Vec<(Tiles, Scalar)> {
    let mut tiles = vec![
        Tiles::plain(4, 4),
        Tiles::plain(8, 8),
        Tiles::plain(4, 4).split(3),
        Tiles::plain(8, 8).split(2),
    ];
    if let Some(c) = ctx.caps.coop {
        let full = Tiles::coop(c.size);
        tiles.extend([full, full.split(3), full.fragments(4, 8)]);
        tiles.extend([full.fragments(8, 4).split(2), full.fragments(4, 4)]);
    }
    let mut variants = Vec::new();
    for t in tiles {
        for dt in [Scalar::F32, Scalar::F16] {
            let coop = matches!(t, Tiles::Coop { .. });
            if (dt == Scalar::F16 && !ctx.caps.f16) || (coop && dt != Scalar::F16) {
                continue;
            }
            variants.push((t, dt));
        }
    }
    variants
}

/// [`product_variants`], and cooperative-matrix tiles on an NHWC copy of the
/// input where the adapter has wide loads.
fn conv_variants(ctx: &GpuContext) -> Vec<(Tiles, Scalar)> {
    let mut variants = product_variants(ctx);
    if let Some(c) = ctx.caps.coop.filter(|c| c.wide) {
        variants.push((Tiles::coop(c.size).nhwc(), Scalar::F16));
        variants.push((Tiles::coop(c.size).nhwc().split(2), Scalar::F16));
        variants.push((Tiles::coop(c.size).fragments(4, 8).nhwc(), Scalar::F16));
        variants.push((Tiles::coop(c.size).fragments(4, 4).nhwc(), Scalar::F16));
    }
    variants
}

fn out(ctx: &GpuContext, bytes: usize) -> Buf {
    up(ctx, &vec![0u8; bytes.max(4)])
}

/// The partial sums of a product of `len` outputs on split-K `t` (none without).
fn partial(ctx: &GpuContext, t: Tiles, len: usize) -> Option<Buf> {
    (t.splits() > 1).then(|| out(ctx, t.partial_bytes(len) as usize))
}

fn dummy(ctx: &GpuContext) -> Buf {
    out(ctx, 16)
}

fn run(ctx: &GpuContext, calls: Vec<Call>) {
    ops::run_now(ctx, &calls).unwrap();
}

fn down<T: bytemuck::Pod>(ctx: &GpuContext, b: &Buf, n: usize) -> Vec<T> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let d = transfer::record_download(ctx, &mut enc, &b.buf, n * std::mem::size_of::<T>()).unwrap();
    let idx = ctx.queue.submit([enc.finish()]);
    let bytes = d.read(ctx, &idx).unwrap();
    bytemuck::cast_slice(&bytes).to_vec()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// `n` elements of type `dt` (f32 or f16) read back as f32.
fn down_as(ctx: &GpuContext, dt: Scalar, b: &Buf, n: usize) -> Vec<f32> {
    if dt == Scalar::F16 {
        from_f16(&down::<f16>(ctx, b, n))
    } else {
        down::<f32>(ctx, b, n)
    }
}

/// `v` as a kernel of type `dt` reads it (rounded to f16 for f16).
fn stored_as(dt: Scalar, v: &[f32]) -> Vec<f32> {
    match dt {
        Scalar::F16 => from_f16(&to_f16(v)),
        _ => v.to_vec(),
    }
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn from_f16(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Index of `out` coordinate `i` in a broadcast operand of `shape`.
fn bcast_index(i: usize, out: &[usize], shape: &[usize]) -> usize {
    let pad = out.len() - shape.len();
    let mut rem = i;
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..out.len()).rev() {
        let c = rem % out[d];
        rem /= out[d];
        if d >= pad {
            let s = shape[d - pad];
            if s != 1 {
                idx += c * stride;
            }
            stride *= s;
        }
    }
    idx
}

#[test]
fn elementwise_chains_with_broadcasting() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    let out_shape = [2usize, 3, 4, 5];
    let n: usize = out_shape.iter().product();
    // (shape of the chain's start, shapes of the other operands, steps)
    type Case = (Vec<usize>, Vec<Vec<usize>>, Vec<Step>);
    let cases: Vec<Case> = vec![
        // Conv bias + relu style: per-channel operand.
        (
            vec![2, 3, 4, 5],
            vec![vec![1, 3, 1, 1]],
            vec![
                Step::Binary {
                    op: Arith::Add,
                    operand: 1,
                    swap: false,
                },
                Step::Unary(UnaryOp::Relu),
            ],
        ),
        // Scalar, swapped subtraction, general broadcast, then sigmoid.
        (
            vec![2, 3, 4, 5],
            vec![vec![1], vec![4, 1]],
            vec![
                Step::Binary {
                    op: Arith::Sub,
                    operand: 1,
                    swap: true,
                },
                Step::Binary {
                    op: Arith::Mul,
                    operand: 2,
                    swap: false,
                },
                Step::Unary(UnaryOp::Sigmoid),
            ],
        ),
        // The chain's start is broadcast too.
        (
            vec![3, 1, 1],
            vec![vec![2, 3, 4, 5]],
            vec![
                Step::Binary {
                    op: Arith::Div,
                    operand: 1,
                    swap: false,
                },
                Step::Unary(UnaryOp::Tanh),
            ],
        ),
        (
            vec![2, 3, 4, 5],
            vec![vec![5]],
            vec![
                Step::Binary {
                    op: Arith::Pow,
                    operand: 1,
                    swap: false,
                },
                Step::Unary(UnaryOp::LeakyRelu { alpha: 0.1 }),
            ],
        ),
        (
            vec![2, 3, 4, 5],
            vec![],
            vec![
                Step::Unary(UnaryOp::Clamp {
                    min: -0.3,
                    max: 0.4,
                }),
                Step::Unary(UnaryOp::HardSwish),
                Step::Unary(UnaryOp::Abs),
            ],
        ),
        // Clip with open bounds (infinite bounds cannot be pipeline constants).
        (
            vec![2, 3, 4, 5],
            vec![],
            vec![
                Step::Unary(UnaryOp::Clamp {
                    min: -0.2,
                    max: f32::INFINITY,
                }),
                Step::Unary(UnaryOp::Clamp {
                    min: f32::NEG_INFINITY,
                    max: 0.1,
                }),
                Step::Unary(UnaryOp::Clamp {
                    min: f32::NEG_INFINITY,
                    max: f32::INFINITY,
                }),
            ],
        ),
        // GELU over both branches of its erf (|x| past 3.9 and within).
        (
            vec![2, 3, 4, 5],
            vec![vec![5]],
            vec![
                Step::Binary {
                    op: Arith::Mul,
                    operand: 1,
                    swap: false,
                },
                Step::Unary(UnaryOp::Gelu),
            ],
        ),
        // NaN replaced (x has NaNs planted below), everything else kept.
        (
            vec![2, 3, 4, 5],
            vec![],
            vec![Step::Unary(UnaryOp::NanTo { value: -2.5 })],
        ),
    ];
    for (ci, (x0_shape, others, steps)) in cases.into_iter().enumerate() {
        let mut shapes = vec![x0_shape];
        shapes.extend(others);
        let mut data: Vec<Vec<f32>> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| rand(s.iter().product(), ci as u64 * 10 + k as u64))
            .collect();
        if ci == 3 {
            data[1] = vec![2.0, 3.0, 0.5, 0.0, 1.0];
        }
        if steps.contains(&Step::Unary(UnaryOp::Gelu)) {
            data[1] = vec![9.0, -7.0, 3.0, -0.5, 0.02];
        }
        if steps.contains(&Step::Unary(UnaryOp::NanTo { value: -2.5 })) {
            data[0].iter_mut().step_by(7).for_each(|v| *v = f32::NAN);
        }
        let mut want = vec![0f32; n];
        for (i, w) in want.iter_mut().enumerate() {
            let load = |k: usize| data[k][bcast_index(i, &out_shape, &shapes[k])];
            let mut acc = load(0);
            for s in &steps {
                acc = match *s {
                    Step::Unary(u) => u.apply_f32(acc),
                    Step::Binary { op, operand, swap } => {
                        let v = load(operand);
                        let (l, r) = if swap { (v, acc) } else { (acc, v) };
                        match op {
                            Arith::Add => l + r,
                            Arith::Sub => l - r,
                            Arith::Mul => l * r,
                            Arith::Div => l / r,
                            Arith::Pow => l.powf(r),
                            Arith::Max => l.max(r),
                            Arith::Min => l.min(r),
                        }
                    }
                };
            }
            *w = acc;
        }
        for dt in [Scalar::F32, Scalar::F16] {
            if dt == Scalar::F16 && !ctx.caps.f16 {
                continue;
            }
            let bufs: Vec<Buf> = data
                .iter()
                .map(|v| {
                    if dt == Scalar::F16 {
                        up(&ctx, &to_f16(v))
                    } else {
                        up(&ctx, v)
                    }
                })
                .collect();
            let esize = if dt == Scalar::F16 { 2 } else { 4 };
            let y = out(&ctx, n * esize);
            let operands: Vec<(Binding, &[usize])> = bufs
                .iter()
                .zip(&shapes)
                .map(|(b, s)| (b.b(), s.as_slice()))
                .collect();
            run(
                &ctx,
                vec![ops::elementwise::elementwise(
                    &ctx,
                    dt,
                    &out_shape,
                    &operands,
                    &steps,
                    y.b(),
                    &d.b(),
                )
                .unwrap()],
            );
            let got = down_as(&ctx, dt, &y, n);
            let tol = if dt == Scalar::F16 { 2e-2 } else { 1e-5 };
            assert_close(&got, &want, tol, &format!("case {ci} {dt:?}"));
        }
    }
}

#[test]
fn integer_elementwise_matches_cpu_semantics() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    let a: Vec<i32> = vec![7, -7, 5, i32::MIN, 9, i32::MAX, -3, 0];
    let b: Vec<i32> = vec![2, 2, 0, -1, -4, 1, 3, 5];
    let steps = [Step::Binary {
        op: Arith::Div,
        operand: 1,
        swap: false,
    }];
    let (ba, bb) = (up(&ctx, &a), up(&ctx, &b));
    let y = out(&ctx, 32);
    run(
        &ctx,
        vec![ops::elementwise::elementwise(
            &ctx,
            Scalar::I32,
            &[8],
            &[(ba.b(), &[8]), (bb.b(), &[8])],
            &steps,
            y.b(),
            &d.b(),
        )
        .unwrap()],
    );
    assert_eq!(
        down::<i32>(&ctx, &y, 8),
        vec![3, -3, 0, 0, -2, i32::MAX, -1, 0]
    );
    let steps = [
        Step::Binary {
            op: Arith::Add,
            operand: 1,
            swap: false,
        },
        Step::Unary(UnaryOp::Relu),
    ];
    run(
        &ctx,
        vec![ops::elementwise::elementwise(
            &ctx,
            Scalar::I32,
            &[8],
            &[(ba.b(), &[8]), (bb.b(), &[8])],
            &steps,
            y.b(),
            &d.b(),
        )
        .unwrap()],
    );
    assert_eq!(
        down::<i32>(&ctx, &y, 8),
        vec![9, 0, 5, i32::MAX, 5, 0, 0, 5]
    );
    if ctx.caps.int64 {
        let a: Vec<i64> = vec![1 << 40, -(1 << 41), 3, 4];
        let b: Vec<i64> = vec![3, 1 << 33, 0, -2];
        let (ba, bb) = (up(&ctx, &a), up(&ctx, &b));
        let y = out(&ctx, 32);
        let steps = [Step::Binary {
            op: Arith::Mul,
            operand: 1,
            swap: false,
        }];
        run(
            &ctx,
            vec![ops::elementwise::elementwise(
                &ctx,
                Scalar::I64,
                &[4],
                &[(ba.b(), &[4]), (bb.b(), &[4])],
                &steps,
                y.b(),
                &d.b(),
            )
            .unwrap()],
        );
        let want: Vec<i64> = a.iter().zip(&b).map(|(x, y)| x.wrapping_mul(*y)).collect();
        assert_eq!(down::<i64>(&ctx, &y, 4), want);
    }
}

fn matmul_ref(g: &Gemm, a: &[f32], b: &[f32], c: Option<&[f32]>, r: Option<&[f32]>) -> Vec<f32> {
    let batch: usize = g.batch.iter().product();
    let mut y = vec![0f32; batch * g.m * g.n];
    for bi in 0..batch {
        // Batch offsets through the batch strides.
        let (mut rem, mut ao, mut bo) = (bi, 0, 0);
        for d in (0..g.batch.len()).rev() {
            let c = rem % g.batch[d];
            rem /= g.batch[d];
            ao += c * g.a_batch_stride[d];
            bo += c * g.b_batch_stride[d];
        }
        for m in 0..g.m {
            for n in 0..g.n {
                let mut acc = 0f32;
                for k in 0..g.k {
                    acc += a[ao + m * g.a_stride[0] + k * g.a_stride[1]]
                        * b[bo + k * g.b_stride[0] + n * g.b_stride[1]];
                }
                let i = (bi * g.m + m) * g.n + n;
                let mut v = g.alpha * acc;
                if let (Some(c), Some((_, s))) = (c, &g.c) {
                    v += g.beta * c[m * s[0] + n * s[1]];
                }
                if let Some(r) = r {
                    v += r[i];
                }
                y[i] = g.activation.map(|u| u.apply_f32(v)).unwrap_or(v);
            }
        }
    }
    y
}

#[test]
fn matmul_and_gemm_match_the_reference() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        batch: Vec<usize>,
        a_bcast: bool,
        trans_a: bool,
        trans_b: bool,
        c: Option<[usize; 2]>,
        residual: bool,
        act: Option<UnaryOp>,
    }
    let cases = [
        Case {
            m: 37,
            n: 53,
            k: 29,
            batch: vec![],
            a_bcast: false,
            trans_a: false,
            trans_b: false,
            c: None,
            residual: false,
            act: None,
        },
        Case {
            m: 130,
            n: 140,
            k: 70,
            batch: vec![],
            a_bcast: false,
            trans_a: false,
            trans_b: true,
            c: Some([0, 1]),
            residual: false,
            act: Some(UnaryOp::Relu),
        },
        Case {
            m: 17,
            n: 9,
            k: 33,
            batch: vec![2, 3],
            a_bcast: true,
            trans_a: false,
            trans_b: false,
            c: None,
            residual: true,
            act: None,
        },
        // Multiples of 8 everywhere: the cooperative-matrix kernel's wide
        // loads of A and of B along n, then of B along k (transposed).
        Case {
            m: 136,
            n: 200,
            k: 72,
            batch: vec![2],
            a_bcast: false,
            trans_a: false,
            trans_b: false,
            c: None,
            residual: true,
            act: Some(UnaryOp::Relu),
        },
        Case {
            m: 72,
            n: 96,
            k: 40,
            batch: vec![3],
            a_bcast: true,
            trans_a: false,
            trans_b: true,
            c: Some([0, 1]),
            residual: false,
            act: None,
        },
        Case {
            m: 1,
            n: 100,
            k: 64,
            batch: vec![],
            a_bcast: false,
            trans_a: true,
            trans_b: true,
            c: Some([1, 0]),
            residual: false,
            act: Some(UnaryOp::Sigmoid),
        },
    ];
    for (ci, cs) in cases.iter().enumerate() {
        let batch: usize = cs.batch.iter().product();
        let a_batches = if cs.a_bcast { 1 } else { batch };
        let a = rand(a_batches * cs.m * cs.k, 100 + ci as u64);
        let b = rand(batch * cs.k * cs.n, 200 + ci as u64);
        let bstr = |inner: usize, bcast: bool| -> Vec<usize> {
            let mut s = vec![0; cs.batch.len()];
            let mut acc = inner;
            for dd in (0..cs.batch.len()).rev() {
                s[dd] = if bcast { 0 } else { acc };
                acc *= cs.batch[dd];
            }
            s
        };
        let c_data =
            cs.c.map(|s| rand(if s[0] == 0 { cs.n } else { cs.m }, 300 + ci as u64));
        let r_data = cs
            .residual
            .then(|| rand(batch * cs.m * cs.n, 400 + ci as u64));
        let mut g = Gemm {
            m: cs.m,
            n: cs.n,
            k: cs.k,
            batch: cs.batch.clone(),
            a_stride: if cs.trans_a { [1, cs.m] } else { [cs.k, 1] },
            b_stride: if cs.trans_b { [1, cs.k] } else { [cs.n, 1] },
            a_batch_stride: bstr(cs.m * cs.k, cs.a_bcast),
            b_batch_stride: bstr(cs.k * cs.n, false),
            alpha: if cs.c.is_some() { 0.5 } else { 1.0 },
            beta: 2.0,
            c: None,
            residual: None,
            activation: cs.act,
        };
        let mut want_g = g.clone();
        want_g.c = cs.c.map(|s| (d.b(), s));
        let want = matmul_ref(&want_g, &a, &b, c_data.as_deref(), r_data.as_deref());
        for (t, dt) in product_variants(&ctx) {
            let up_t = |v: &[f32]| up_as(&ctx, dt, v);
            let (ba, bb) = (up_t(&a), up_t(&b));
            let bc = c_data.as_ref().map(|v| up_t(v));
            let br = r_data.as_ref().map(|v| up_t(v));
            g.c = bc.as_ref().map(|b| (b.b(), cs.c.unwrap()));
            g.residual = br.as_ref().map(|b| b.b());
            let esize = if dt == Scalar::F16 { 2 } else { 4 };
            let total = batch * cs.m * cs.n;
            let y = out(&ctx, total * esize);
            let part = partial(&ctx, t, total);
            let calls = ops::matmul::matmul(
                &ctx,
                dt,
                &g,
                t,
                ba.b(),
                bb.b(),
                y.b(),
                part.as_ref().map(Buf::b),
                &d.b(),
            )
            .unwrap();
            assert_eq!(calls.len(), 1 + usize::from(t.splits() > 1));
            run(&ctx, calls);
            let got = down_as(&ctx, dt, &y, total);
            let tol = if dt == Scalar::F16 { 3e-2 } else { 1e-4 };
            assert_close(&got, &want, tol, &format!("matmul case {ci} {t:?} {dt:?}"));
        }
    }
}

fn conv_ref(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    act: Option<UnaryOp>,
) -> Vec<f32> {
    let (icg, ocg) = (g.ic / g.group, g.oc / g.group);
    let mut y = vec![0f32; g.batch * g.oc * g.oh * g.ow];
    for b in 0..g.batch {
        for oc in 0..g.oc {
            let grp = oc / ocg;
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let mut acc = bias.map(|v| v[oc]).unwrap_or(0.0);
                    for ic in 0..icg {
                        for kh in 0..g.kernel[0] {
                            for kw in 0..g.kernel[1] {
                                let ih = (oh * g.stride[0] + kh * g.dilation[0]) as isize
                                    - g.pad[0] as isize;
                                let iw = (ow * g.stride[1] + kw * g.dilation[1]) as isize
                                    - g.pad[1] as isize;
                                if ih < 0 || iw < 0 || ih >= g.ih as isize || iw >= g.iw as isize {
                                    continue;
                                }
                                let xv = x[((b * g.ic + grp * icg + ic) * g.ih + ih as usize)
                                    * g.iw
                                    + iw as usize];
                                let wv = w[((oc * icg + ic) * g.kernel[0] + kh) * g.kernel[1] + kw];
                                acc += xv * wv;
                            }
                        }
                    }
                    let i = ((b * g.oc + oc) * g.oh + oh) * g.ow + ow;
                    if let Some(r) = res {
                        acc += r[i];
                    }
                    y[i] = act.map(|u| u.apply_f32(acc)).unwrap_or(acc);
                }
            }
        }
    }
    y
}

#[test]
fn convolution_matches_the_reference() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    let geo = |batch,
               ic,
               ih,
               iw,
               oc,
               group,
               k: [usize; 2],
               s: [usize; 2],
               dl: [usize; 2],
               p: [usize; 2]| {
        let oh = (ih + 2 * p[0] - (k[0] - 1) * dl[0] - 1) / s[0] + 1;
        let ow = (iw + 2 * p[1] - (k[1] - 1) * dl[1] - 1) / s[1] + 1;
        ConvGeometry {
            batch,
            ic,
            ih,
            iw,
            oc,
            oh,
            ow,
            group,
            kernel: k,
            stride: s,
            dilation: dl,
            pad: p,
            tap_major: false,
            ic_pad: 0,
        }
    };
    let cases = vec![
        (
            geo(2, 3, 11, 13, 8, 1, [3, 3], [1, 1], [1, 1], [1, 1]),
            true,
            false,
            Some(UnaryOp::Relu),
        ),
        (
            geo(1, 16, 9, 9, 20, 1, [1, 1], [2, 2], [1, 1], [0, 0]),
            false,
            true,
            None,
        ),
        (
            geo(1, 8, 10, 7, 12, 4, [3, 2], [2, 1], [2, 1], [2, 1]),
            true,
            true,
            Some(UnaryOp::Relu),
        ),
        (
            geo(3, 4, 1, 20, 6, 2, [1, 5], [1, 2], [1, 1], [0, 2]),
            true,
            false,
            None,
        ),
        (
            geo(1, 3, 20, 20, 70, 1, [7, 7], [2, 2], [1, 1], [3, 3]),
            true,
            false,
            Some(UnaryOp::Relu),
        ),
        // Wide loads on cooperative matrices: the weights (K = 72) with a
        // 3x3 window; weights and pixels of 1x1 convolutions (planes of 48
        // and 16 pixels), one of them grouped.
        (
            geo(1, 8, 10, 10, 72, 1, [3, 3], [1, 1], [1, 1], [1, 1]),
            true,
            false,
            None,
        ),
        (
            geo(2, 24, 8, 6, 136, 1, [1, 1], [1, 1], [1, 1], [0, 0]),
            true,
            true,
            Some(UnaryOp::Relu),
        ),
        (
            geo(3, 32, 4, 4, 160, 2, [1, 1], [1, 1], [1, 1], [0, 0]),
            false,
            true,
            None,
        ),
        // Enough input channels for tap-major weights (run both ways): a
        // 3x3 window; a grouped, strided and dilated one over 72 channels per
        // group (k-tiles straddle two taps, some inside and some in the padding).
        (
            geo(2, 64, 7, 9, 24, 1, [3, 3], [1, 1], [1, 1], [1, 1]),
            true,
            true,
            Some(UnaryOp::Relu),
        ),
        (
            geo(1, 144, 9, 8, 20, 2, [3, 2], [2, 1], [2, 1], [2, 1]),
            false,
            false,
            None,
        ),
        // Depthwise (depthwise.wgsl): ReLU6, a channel multiplier with a
        // residual, dilation with a row shorter than one invocation's outputs, 1-D.
        (
            geo(2, 8, 9, 11, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1]),
            true,
            false,
            Some(UnaryOp::Clamp { min: 0.0, max: 6.0 }),
        ),
        (
            geo(1, 6, 13, 10, 12, 6, [3, 3], [2, 2], [1, 1], [1, 1]),
            false,
            true,
            None,
        ),
        (
            geo(1, 5, 7, 3, 5, 5, [5, 5], [1, 2], [2, 1], [2, 2]),
            true,
            true,
            Some(UnaryOp::Relu),
        ),
        (
            geo(2, 4, 1, 17, 4, 4, [1, 3], [1, 1], [1, 1], [0, 1]),
            true,
            false,
            None,
        ),
    ];
    for (ci, (g, has_bias, has_res, act)) in cases.into_iter().enumerate() {
        let x = rand(g.batch * g.ic * g.ih * g.iw, 500 + ci as u64);
        let w = rand(
            g.oc * g.ic / g.group * g.kernel[0] * g.kernel[1],
            600 + ci as u64,
        );
        let bias = has_bias.then(|| rand(g.oc, 700 + ci as u64));
        let total = g.batch * g.oc * g.oh * g.ow;
        let res = has_res.then(|| rand(total, 800 + ci as u64));
        let want = conv_ref(&g, &x, &w, bias.as_deref(), res.as_deref(), act);
        // Plain and cooperative tiles in ONNX's weight order, and tap-major
        // where that serves; NHWC tiles tap-major (with zero channels up to a
        // multiple of 8 for a single group) unless the window is one tap.
        let layouts = |t: Tiles| -> Vec<ConvGeometry> {
            let tap_major = |ic_pad| ConvGeometry {
                tap_major: true,
                ic_pad,
                ..g.clone()
            };
            if t.reads_nhwc() {
                let nhwc = match g.kernel {
                    [1, 1] => g.clone(),
                    _ => tap_major(g.nhwc_pad()),
                };
                return nhwc.nhwc_fits().then_some(nhwc).into_iter().collect();
            }
            let mut all = vec![g.clone()];
            all.extend(g.tap_major_pays().then(|| tap_major(0)));
            all
        };
        for (g, (t, dt)) in conv_variants(&ctx)
            .into_iter()
            .flat_map(|v| layouts(v.0).into_iter().map(move |g| (g, v)))
        {
            let tm = g.tap_major;
            let w = if tm {
                let shape = vec![g.oc, g.ic / g.group, g.kernel[0], g.kernel[1]];
                let t = Tensor::from_slice(shape, &w).unwrap();
                tap_major_weights(&t, g.ic_pad)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap()
            } else {
                w.clone()
            };
            let up_t = |v: &[f32]| up_as(&ctx, dt, v);
            let (bx, bw) = (up_t(&x), up_t(&w));
            let bb = bias.as_ref().map(|v| up_t(v));
            let br = res.as_ref().map(|v| up_t(v));
            let esize = if dt == Scalar::F16 { 2 } else { 4 };
            let y = out(&ctx, total * esize);
            let own = |bytes: u64| (bytes > 0).then(|| out(&ctx, bytes as usize));
            let scratch = own(t.partial_bytes(g.output_len()));
            let nhwc = own(g.nhwc_bytes(t));
            let calls = ops::conv::conv(
                &ctx,
                dt,
                &g,
                t,
                bx.b(),
                bw.b(),
                bb.as_ref().map(Buf::b),
                br.as_ref().map(Buf::b),
                act,
                y.b(),
                [scratch.as_ref().map(Buf::b), nhwc.as_ref().map(Buf::b)],
                &d.b(),
            )
            .unwrap();
            run(&ctx, calls);
            let got = down_as(&ctx, dt, &y, total);
            let tol = if dt == Scalar::F16 { 3e-2 } else { 1e-4 };
            assert_close(
                &got,
                &want,
                tol,
                &format!(
                    "conv case {ci} {t:?} {dt:?} tap-major {tm}, {} zero channels",
                    g.ic_pad
                ),
            );
        }
    }
}

#[test]
fn nhwc_copy_matches_the_reference() {
    let Some(ctx) = ctx() else { return };
    if !ctx.caps.f16 {
        return;
    }
    // Planes of 35 pixels: loads straddle vectors and images; 24 channels,
    // and 3 written as 8 (five zero).
    for (n, c_in, c, hw) in [(3, 24, 24, 35), (2, 3, 8, 35)] {
        let x = to_f16(&rand(n * c_in * hw, 950));
        let (bx, y) = (up(&ctx, &x), out(&ctx, n * c * hw * 2));
        run(
            &ctx,
            vec![ops::conv::to_nhwc(&ctx, [n, c_in, c, hw], bx.b(), y.b()).unwrap()],
        );
        let got = down::<f16>(&ctx, &y, n * c * hw);
        for (img, q, ch) in
            (0..n).flat_map(|i| (0..hw).flat_map(move |q| (0..c).map(move |ch| (i, q, ch))))
        {
            let want = match ch < c_in {
                true => x[(img * c_in + ch) * hw + q],
                false => f16::ZERO,
            };
            assert_eq!(
                got[(img * hw + q) * c + ch],
                want,
                "image {img} pixel {q} channel {ch} of {c_in} as {c}"
            );
        }
    }
}

#[test]
fn pools_match_the_reference() {
    let Some(ctx) = ctx() else { return };
    let (planes, ih, iw) = (6, 9, 8);
    let x = rand(planes * ih * iw, 900);
    for (max, include_pad) in [(true, false), (false, false), (false, true)] {
        let (k, s, p, e) = ([3, 2], [2, 2], [1, 0], [1, 1]);
        let oh = (ih + p[0] + e[0] - k[0]) / s[0] + 1;
        let ow = (iw + p[1] + e[1] - k[1]) / s[1] + 1;
        let g = PoolGeometry {
            planes,
            ih,
            iw,
            oh,
            ow,
            kernel: k,
            stride: s,
            dilation: [1, 1],
            pad_begin: p,
            pad_end: e,
            max,
            count_include_pad: include_pad,
        };
        let mut want = vec![0f32; planes * oh * ow];
        for pl in 0..planes {
            for y in 0..oh {
                for xx in 0..ow {
                    let (mut acc, mut cnt) = (if max { f32::NEG_INFINITY } else { 0.0 }, 0);
                    for a in 0..k[0] {
                        for b in 0..k[1] {
                            let r = (y * s[0] + a) as isize - p[0] as isize;
                            let c = (xx * s[1] + b) as isize - p[1] as isize;
                            if r < 0 || c < 0 || r >= ih as isize || c >= iw as isize {
                                continue;
                            }
                            let v = x[(pl * ih + r as usize) * iw + c as usize];
                            acc = if max { acc.max(v) } else { acc + v };
                            cnt += 1;
                        }
                    }
                    let taps = |o: usize, i: usize| {
                        let st = (o * s[i]) as isize - p[i] as isize;
                        (0..k[i])
                            .filter(|&t| st + (t as isize) < ([ih, iw][i] + e[i]) as isize)
                            .count()
                    };
                    want[(pl * oh + y) * ow + xx] = if max {
                        acc
                    } else {
                        acc / (if include_pad {
                            taps(y, 0) * taps(xx, 1)
                        } else {
                            cnt
                        }) as f32
                    };
                }
            }
        }
        let bx = up(&ctx, &x);
        let y = out(&ctx, want.len() * 4);
        run(
            &ctx,
            vec![ops::pool::pool(&ctx, Scalar::F32, &g, bx.b(), y.b()).unwrap()],
        );
        assert_close(
            &down::<f32>(&ctx, &y, want.len()),
            &want,
            1e-5,
            &format!("pool max={max} pad={include_pad}"),
        );
    }
}

#[test]
fn softmax_reduce_copy_cast_batchnorm() {
    let Some(ctx) = ctx() else { return };
    // Softmax along the last axis and along a middle axis.
    for (outer, len, inner) in [(5usize, 300usize, 1usize), (3, 7, 4)] {
        let x: Vec<f32> = rand(outer * len * inner, 1000)
            .iter()
            .map(|v| v * 10.0)
            .collect();
        let mut want = x.clone();
        for o in 0..outer {
            for r in 0..inner {
                let idx = |j: usize| (o * len + j) * inner + r;
                let m = (0..len)
                    .map(|j| x[idx(j)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = (0..len).map(|j| (x[idx(j)] - m).exp()).sum();
                for j in 0..len {
                    want[idx(j)] = (x[idx(j)] - m).exp() / s;
                }
            }
        }
        let (bx, y) = (up(&ctx, &x), out(&ctx, x.len() * 4));
        run(
            &ctx,
            vec![
                ops::softmax::softmax(&ctx, Scalar::F32, outer, len, inner, bx.b(), y.b()).unwrap(),
            ],
        );
        assert_close(&down::<f32>(&ctx, &y, x.len()), &want, 1e-5, "softmax");
    }
    // Reductions over several axis sets, both kernels (short and long rows).
    let shape = [3usize, 4, 50, 6];
    let x = rand(shape.iter().product(), 1100);
    for axes in [vec![3], vec![1, 2], vec![0, 2], vec![0, 1, 2, 3]] {
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
            let kept: Vec<usize> = (0..4).filter(|d| !axes.contains(d)).collect();
            let n_out: usize = kept.iter().map(|&d| shape[d]).product();
            let mut acc = vec![
                match op {
                    ReduceOp::Max => f32::NEG_INFINITY,
                    ReduceOp::Min => f32::INFINITY,
                    _ => 0.0,
                };
                n_out
            ];
            let st = metal_mps_ir::strides(&shape);
            for (i, &v) in x.iter().enumerate() {
                let mut o = 0;
                for &d in &kept {
                    o = o * shape[d] + (i / st[d]) % shape[d];
                }
                acc[o] = match op {
                    ReduceOp::Max => acc[o].max(v),
                    ReduceOp::Min => acc[o].min(v),
                    _ => acc[o] + v,
                };
            }
            let count = x.len() / n_out;
            if op == ReduceOp::Mean {
                acc.iter_mut().for_each(|a| *a /= count as f32);
            }
            let (bx, y) = (up(&ctx, &x), out(&ctx, n_out * 4));
            run(
                &ctx,
                vec![
                    ops::reduce::reduce(&ctx, Scalar::F32, op, &shape, &axes, bx.b(), y.b())
                        .unwrap(),
                ],
            );
            assert_close(
                &down::<f32>(&ctx, &y, n_out),
                &acc,
                1e-4,
                &format!("reduce {op:?} {axes:?}"),
            );
        }
    }
    // Transpose, and concat of two parts along axis 1, for 4- and 8-byte elements.
    let shape = [2usize, 3, 4, 5];
    let perm = [0usize, 3, 1, 2];
    let x: Vec<f32> = (0..120).map(|v| v as f32).collect();
    let (bx, y) = (up(&ctx, &x), out(&ctx, 480));
    run(
        &ctx,
        vec![ops::copy::copy(&ctx, 4, &Region::transpose(&shape, &perm), bx.b(), y.b()).unwrap()],
    );
    let st = metal_mps_ir::strides(&shape);
    let mut want = vec![0f32; 120];
    let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ost = metal_mps_ir::strides(&oshape);
    for (i, w) in want.iter_mut().enumerate() {
        let src: usize = (0..4)
            .map(|d| ((i / ost[d]) % oshape[d]) * st[perm[d]])
            .sum();
        *w = x[src];
    }
    assert_close(&down::<f32>(&ctx, &y, 120), &want, 0.0, "transpose");
    let a: Vec<i64> = (0..2 * 2 * 3).map(|v| v as i64 + (1 << 40)).collect();
    let b: Vec<i64> = (0..2 * 3 * 3).map(|v| -(v as i64)).collect();
    let (ba, bb, y) = (up(&ctx, &a), up(&ctx, &b), out(&ctx, 2 * 5 * 3 * 8));
    run(
        &ctx,
        vec![
            ops::copy::copy(
                &ctx,
                8,
                &Region::into_slice(&[2, 2, 3], &[2, 5, 3], 1, 0),
                ba.b(),
                y.b(),
            )
            .unwrap(),
            ops::copy::copy(
                &ctx,
                8,
                &Region::into_slice(&[2, 3, 3], &[2, 5, 3], 1, 2),
                bb.b(),
                y.b(),
            )
            .unwrap(),
        ],
    );
    let got = down::<i64>(&ctx, &y, 30);
    let mut want = Vec::new();
    for n in 0..2 {
        want.extend_from_slice(&a[n * 6..n * 6 + 6]);
        want.extend_from_slice(&b[n * 9..n * 9 + 9]);
    }
    assert_eq!(got, want, "concat");
    // Split back out the second part.
    let z = out(&ctx, 2 * 3 * 3 * 8);
    run(
        &ctx,
        vec![ops::copy::copy(
            &ctx,
            8,
            &Region::from_slice(&[2, 5, 3], &[2, 3, 3], 1, 2),
            y.b(),
            z.b(),
        )
        .unwrap()],
    );
    assert_eq!(down::<i64>(&ctx, &z, 18), b, "split");
    // Casts.
    let x = vec![1.5f32, -2.7, 1e10, -0.4];
    let (bx, y) = (up(&ctx, &x), out(&ctx, 16));
    run(
        &ctx,
        vec![ops::cast::cast(&ctx, Scalar::F32, Scalar::I32, false, 4, bx.b(), y.b()).unwrap()],
    );
    assert_eq!(down::<i32>(&ctx, &y, 4), vec![1, -2, i32::MAX, 0]);
    if ctx.caps.f16 {
        let y = out(&ctx, 8);
        run(
            &ctx,
            vec![ops::cast::cast(&ctx, Scalar::F32, Scalar::F16, false, 4, bx.b(), y.b()).unwrap()],
        );
        let got = down::<f16>(&ctx, &y, 4);
        assert_eq!(got[0], f16::from_f32(1.5));
        assert_eq!(got[1], f16::from_f32(-2.7));
    }
    // To a boolean (an i32 0 or 1): whether not zero; NaN is true, -0 false.
    let x = vec![1.5f32, 0.0, f32::NAN, -0.0];
    let (bx, y) = (up(&ctx, &x), out(&ctx, 16));
    run(
        &ctx,
        vec![ops::cast::cast(&ctx, Scalar::F32, Scalar::I32, true, 4, bx.b(), y.b()).unwrap()],
    );
    assert_eq!(down::<i32>(&ctx, &y, 4), vec![1, 0, 1, 0]);
    let x = vec![5i32, 0, -3, 1];
    let (bx, y) = (up(&ctx, &x), out(&ctx, 16));
    run(
        &ctx,
        vec![ops::cast::cast(&ctx, Scalar::I32, Scalar::I32, true, 4, bx.b(), y.b()).unwrap()],
    );
    assert_eq!(down::<i32>(&ctx, &y, 4), vec![1, 0, 1, 1]);
    // BatchNormalization with run-time parameters.
    let (n, c, inner) = (2usize, 3usize, 5usize);
    let x = rand(n * c * inner, 1200);
    let p: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            rand(c, 1300 + i)
                .iter()
                .map(|v| if i == 3 { v.abs() + 0.5 } else { *v })
                .collect()
        })
        .collect();
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner) % c;
            (v - p[2][ch]) / (p[3][ch] + 1e-5).sqrt() * p[0][ch] + p[1][ch]
        })
        .collect();
    let bx = up(&ctx, &x);
    let bp: Vec<Buf> = p.iter().map(|v| up(&ctx, v)).collect();
    let y = out(&ctx, x.len() * 4);
    let call = ops::batchnorm::batchnorm(
        &ctx,
        Scalar::F32,
        x.len(),
        c,
        inner,
        1e-5,
        bx.b(),
        [bp[0].b(), bp[1].b(), bp[2].b(), bp[3].b()],
        y.b(),
    )
    .unwrap();
    run(&ctx, vec![call]);
    assert_close(&down::<f32>(&ctx, &y, x.len()), &want, 1e-5, "batchnorm");
}

/// LayerNormalization (or RMSNormalization) of rows in f64, the ONNX formula.
fn norm_ref(
    x: &[f32],
    cols: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    eps: f64,
    rms: bool,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let n = cols as f64;
        let mean = if rms {
            0.0
        } else {
            row.iter().map(|&v| v as f64).sum::<f64>() / n
        };
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[j] as f64);
            y.push(((v as f64 - mean) * inv * scale[j] as f64 + b) as f32);
        }
    }
    y
}

#[test]
fn layer_and_rms_norms_match_the_reference() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    // Rows shorter, longer and not a multiple of a workgroup; values offset far
    // from 0, where one-pass statistics would lose the variance.
    for (ci, &(rows, cols, rms, has_bias)) in [
        (5, 32, false, true),
        (3, 768, false, true),
        (2, 1000, true, false),
        (4, 7, false, false),
    ]
    .iter()
    .enumerate()
    {
        let x: Vec<f32> = rand(rows * cols, 950 + ci as u64)
            .iter()
            .map(|v| v + 100.0)
            .collect();
        let scale = rand(cols, 960 + ci as u64);
        let bias = has_bias.then(|| rand(cols, 970 + ci as u64));
        for dt in [Scalar::F32, Scalar::F16] {
            if dt == Scalar::F16 && !ctx.caps.f16 {
                continue;
            }
            // The reference reads what the kernel reads: f16 inputs rounded.
            let stored = |v: &[f32]| stored_as(dt, v);
            let (xs, ss, bs) = (stored(&x), stored(&scale), bias.as_deref().map(stored));
            let want = norm_ref(&xs, cols, &ss, bs.as_deref(), 1e-5, rms);
            let (bx, bs) = (up_as(&ctx, dt, &x), up_as(&ctx, dt, &scale));
            let bb = bias.as_ref().map(|v| up_as(&ctx, dt, v));
            let esize = if dt == Scalar::F16 { 2 } else { 4 };
            let y = out(&ctx, x.len() * esize);
            let call = ops::layernorm::layer_norm(
                &ctx,
                dt,
                rows,
                cols,
                1e-5,
                rms,
                bx.b(),
                bs.b(),
                bb.as_ref().map(Buf::b),
                y.b(),
                &d.b(),
            )
            .unwrap();
            run(&ctx, vec![call]);
            let got = down_as(&ctx, dt, &y, x.len());
            let tol = if dt == Scalar::F16 { 3e-2 } else { 2e-4 };
            assert_close(&got, &want, tol, &format!("norm case {ci} {dt:?}"));
        }
    }
}

/// Naive attention over `a`'s strides, in f64; `mask` as the kernel reads it
/// (an added float, or 0/1 for a boolean mask).
fn attention_ref(a: &Attention, q: &[f32], k: &[f32], v: &[f32], mask: &[f32]) -> Vec<f32> {
    let at = |s: &[usize; 4], c: [usize; 4]| s.iter().zip(c).map(|(s, c)| s * c).sum::<usize>();
    let len = a.batch * a.heads * a.sq * a.dv;
    let mut out = vec![0.0f32; len];
    for b in 0..a.batch {
        for h in 0..a.heads {
            let kh = h / a.group;
            for i in 0..a.sq {
                let scores: Vec<f64> = (0..a.skv)
                    .map(|j| {
                        let dot: f64 = (0..a.d)
                            .map(|d| {
                                f64::from(q[at(&a.q, [b, h, i, d])])
                                    * f64::from(k[at(&a.k, [b, kh, j, d])])
                            })
                            .sum();
                        let mut s = dot * f64::from(a.scale);
                        if let Some(m) = &a.mask {
                            let e = at(&m.strides, [b, h, i, j]);
                            if j >= m.len {
                                s = f64::NEG_INFINITY;
                            } else if m.kind == MaskKind::Bool {
                                s = if mask[e] != 0.0 { s } else { f64::NEG_INFINITY };
                            } else {
                                s += f64::from(mask[e]);
                            }
                        }
                        if a.causal && j > i {
                            s = f64::NEG_INFINITY;
                        }
                        s
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for c in 0..a.dv {
                    let y = if max == f64::NEG_INFINITY {
                        if a.empty_zero {
                            0.0
                        } else {
                            f64::NAN
                        }
                    } else {
                        (0..a.skv)
                            .map(|j| weights[j] * f64::from(v[at(&a.v, [b, kh, j, c])]))
                            .sum::<f64>()
                            / sum
                    };
                    out[at(&a.out, [b, h, i, c])] = y as f32;
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_the_reference() {
    let Some(ctx) = ctx() else { return };
    let d = dummy(&ctx);
    let packed = |s: usize, h: usize, w: usize| [s * h * w, w, h * w, 1];
    let planar = |h: usize, s: usize, w: usize| [h * s * w, s * w, w, 1];
    let base = Attention {
        batch: 2,
        heads: 3,
        group: 1,
        sq: 19,
        skv: 37,
        d: 24,
        dv: 40,
        scale: 0.2,
        q: planar(3, 19, 24),
        k: planar(3, 37, 24),
        v: planar(3, 37, 40),
        out: planar(3, 19, 40),
        mask: None,
        causal: false,
        empty_zero: false,
        nan_zero: false,
    };
    // (case, mask values): 4-D heads with no mask; 3-D packed heads, grouped
    // KV heads, causal and a boolean (query, key) mask that empties a row;
    // K transposed with an added (batch, key) mask shorter than the keys,
    // one batch's all -inf (NaN rows); the largest head size.
    let (sq, skv) = (5, 21);
    let mut bool_mask: Vec<f32> = (0..sq * skv).map(|e| f32::from(e % 3 != 1)).collect();
    bool_mask[..skv].fill(0.0);
    let mut add_mask = rand(2 * 10, 990);
    add_mask[10..].fill(f32::NEG_INFINITY);
    let cases = [
        (base.clone(), vec![]),
        (
            Attention {
                heads: 4,
                group: 2,
                sq,
                skv,
                d: 16,
                dv: 8,
                q: packed(sq, 4, 16),
                k: packed(skv, 2, 16),
                v: packed(skv, 2, 8),
                out: packed(sq, 4, 8),
                mask: Some(AttentionMask {
                    kind: MaskKind::Bool,
                    strides: [0, 0, skv, 1],
                    len: skv,
                }),
                causal: true,
                empty_zero: true,
                ..base.clone()
            },
            bool_mask,
        ),
        (
            Attention {
                heads: 1,
                sq,
                skv,
                d: 16,
                dv: 16,
                q: planar(1, sq, 16),
                k: [16 * skv, 16 * skv, 1, skv],
                v: planar(1, skv, 16),
                out: planar(1, sq, 16),
                mask: Some(AttentionMask {
                    kind: MaskKind::F32,
                    strides: [10, 0, 0, 1],
                    len: 10,
                }),
                ..base.clone()
            },
            add_mask,
        ),
        (
            Attention {
                heads: 1,
                sq: 33,
                skv: 50,
                d: 128,
                dv: 128,
                q: planar(1, 33, 128),
                k: planar(1, 50, 128),
                v: planar(1, 50, 128),
                out: planar(1, 33, 128),
                ..base.clone()
            },
            vec![],
        ),
    ];
    for (ci, (a, mask)) in cases.into_iter().enumerate() {
        let kv_heads = a.heads / a.group;
        let q = rand(a.batch * a.heads * a.sq * a.d, 1000 + ci as u64);
        let k = rand(a.batch * kv_heads * a.skv * a.d, 1010 + ci as u64);
        let v = rand(a.batch * kv_heads * a.skv * a.dv, 1020 + ci as u64);
        let n_out = a.batch * a.heads * a.sq * a.dv;
        for dt in [Scalar::F32, Scalar::F16] {
            if dt == Scalar::F16 && !ctx.caps.f16 {
                continue;
            }
            let stored = |v: &[f32]| stored_as(dt, v);
            let mut a = a.clone();
            let bm = a.mask.as_mut().map(|m| {
                if m.kind == MaskKind::Bool {
                    let words: Vec<i32> = mask.iter().map(|&x| x as i32).collect();
                    up(&ctx, &words)
                } else {
                    m.kind = if dt == Scalar::F16 {
                        MaskKind::F16
                    } else {
                        MaskKind::F32
                    };
                    up_as(&ctx, dt, &mask)
                }
            });
            let want = attention_ref(&a, &stored(&q), &stored(&k), &stored(&v), &stored(&mask));
            let esize = if dt == Scalar::F16 { 2 } else { 4 };
            let y = out(&ctx, n_out * esize);
            let (bq, bk, bv) = (
                up_as(&ctx, dt, &q),
                up_as(&ctx, dt, &k),
                up_as(&ctx, dt, &v),
            );
            let call = ops::attention::attention(
                &ctx,
                dt,
                &a,
                bq.b(),
                bk.b(),
                bv.b(),
                bm.as_ref().map(Buf::b),
                y.b(),
                &d.b(),
            )
            .unwrap();
            run(&ctx, vec![call]);
            let got = down_as(&ctx, dt, &y, n_out);
            let tol = if dt == Scalar::F16 { 1e-2 } else { 1e-5 };
            assert_close(&got, &want, tol, &format!("attention case {ci} {dt:?}"));
        }
    }
}
