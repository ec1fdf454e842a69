//! The GPU engine on hand-built graphs: every op of the spec's list against the
//! CPU engine, CPU fallback through transfers, INT64, dynamic batch,
//! concurrent submissions and flat memory over thousands of inferences.

mod common;

use common::{gpu, optimize, rand, rel_diff};
use metal_mps_cpu::CpuPlan;
use metal_mps_gpu::{GpuOptions, GpuRunner, Precision};
use metal_mps_ir::*;

/// Builds graphs node by node.
struct B {
    g: Graph,
}

impl B {
    fn new() -> B {
        B {
            g: Graph::default(),
        }
    }

    fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> ValueId {
        let v = self.g.add_value(name);
        self.g.values[v].dtype = Some(dtype);
        self.g.values[v].shape = Some(shape);
        self.g.inputs.push(v);
        v
    }

    fn constant(&mut self, t: Tensor) -> ValueId {
        let n = format!("c{}", self.g.values.len());
        self.g.add_constant(n, t)
    }

    fn weights(&mut self, shape: &[usize], seed: u64) -> ValueId {
        let n = shape.iter().product();
        self.constant(Tensor::from_vec(shape.to_vec(), rand(n, seed)).unwrap())
    }

    fn node(&mut self, op: Op, inputs: &[Option<ValueId>], outputs: usize) -> Vec<ValueId> {
        let name = format!("n{}_{}", self.g.nodes.len(), op.name());
        let outs: Vec<ValueId> = (0..outputs)
            .map(|i| self.g.add_value(format!("{name}.out{i}")))
            .collect();
        self.g.nodes.push(Node {
            name,
            onnx_op: op.name(),
            op,
            opset: 17,
            inputs: inputs.to_vec(),
            outputs: outs.clone(),
        });
        outs
    }

    fn one(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        let ins: Vec<Option<ValueId>> = inputs.iter().map(|&v| Some(v)).collect();
        self.node(op, &ins, 1)[0]
    }

    /// A stride-1, ungrouped Conv of `x` with weights `w`, padded by `pads`.
    fn conv(&mut self, x: ValueId, w: ValueId, pads: &[usize], activation: Activation) -> ValueId {
        let attrs = ConvAttrs {
            window: window(&[], &[1, 1], pads),
            group: 1,
            activation,
            max_pool_2x2: false,
        };
        self.one(Op::Conv(attrs), &[x, w])
    }

    fn finish(mut self, outputs: &[ValueId]) -> Graph {
        self.g.outputs = outputs.to_vec();
        optimize(&mut self.g);
        self.g
    }
}

fn window(kernel: &[usize], strides: &[usize], pads: &[usize]) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: vec![],
        pads: pads.to_vec(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    }
}

/// A shape of fixed dimensions.
fn fixed(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn input(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape.to_vec(), rand(shape.iter().product(), seed)).unwrap()
}

fn check(g: &Graph, inputs: &[&Tensor], runner: &GpuRunner, tol: f64) {
    let want = CpuPlan::new(g.clone()).run(inputs).unwrap();
    let got = runner.run(inputs).unwrap();
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.dtype(), b.dtype(), "output {k}");
        let d = rel_diff(a, b);
        assert!(d <= tol, "output {k} differs by {d:e}");
    }
}

fn engines(runner: &GpuRunner) -> Vec<(String, &'static str)> {
    runner.node_engines()
}

/// Every op of the spec's list, in one graph, all on the GPU.
#[test]
fn spec_ops_run_on_the_gpu_and_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input(
        "x",
        DType::F32,
        vec![
            Dim::Sym("batch".into()),
            Dim::Fixed(4),
            Dim::Fixed(10),
            Dim::Fixed(10),
        ],
    );
    let w = b.weights(&[8, 4, 3, 3], 1);
    let conv = b.conv(x, w, &[1, 1, 1, 1], Activation::None);
    let bn_params: Vec<ValueId> = (0..4)
        .map(|i| {
            let v: Vec<f32> = rand(8, 10 + i)
                .iter()
                .map(|x| if i == 3 { x.abs() + 0.5 } else { *x })
                .collect();
            b.constant(Tensor::from_vec(vec![8], v).unwrap())
        })
        .collect();
    let bn = b.one(
        Op::BatchNorm { epsilon: 1e-5 },
        &[conv, bn_params[0], bn_params[1], bn_params[2], bn_params[3]],
    );
    let relu = b.one(Op::Unary(UnaryOp::Relu), &[bn]);
    let mp = b.one(
        Op::Pool(PoolAttrs {
            kind: PoolKind::Max,
            window: window(&[2, 2], &[2, 2], &[0, 0, 0, 0]),
            count_include_pad: false,
        }),
        &[relu],
    );
    let ap = b.one(
        Op::Pool(PoolAttrs {
            kind: PoolKind::Average,
            window: window(&[3, 3], &[1, 1], &[1, 1, 1, 1]),
            count_include_pad: true,
        }),
        &[mp],
    );
    let sig = b.one(Op::Unary(UnaryOp::Sigmoid), &[ap]);
    let th = b.one(Op::Unary(UnaryOp::Tanh), &[mp]);
    let two = b.constant(Tensor::scalar(2.0f32));
    let sub = b.one(Op::Binary(BinaryOp::Sub), &[sig, th]);
    let mul = b.one(Op::Binary(BinaryOp::Mul), &[sub, two]);
    let div = b.one(Op::Binary(BinaryOp::Div), &[mul, two]);
    let add = b.one(Op::Binary(BinaryOp::Add), &[div, ap]);
    // [N, 8, 5, 5] -> Transpose -> [N, 5, 5, 8]; Concat with itself on axis 3; Split back.
    let tr = b.one(
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        &[add],
    );
    let cat = b.one(Op::Concat { axis: 3 }, &[tr, tr]);
    let parts = b.node(
        Op::Split {
            axis: 3,
            sizes: Some(vec![5, 11]),
            num_outputs: 2,
        },
        &[Some(cat)],
        2,
    );
    let shape = b.constant(Tensor::from_vec(vec![2], vec![-1i64, 200]).unwrap());
    let flat = b.one(Op::Reshape { allowzero: false }, &[tr, shape]);
    let wm = b.weights(&[200, 30], 2);
    let mm = b.one(
        Op::MatMul {
            activation: Activation::None,
        },
        &[flat, wm],
    );
    let wg = b.weights(&[7, 30], 3);
    let cg = b.weights(&[7], 4);
    let gemm = b.one(
        Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 1.5,
            trans_a: false,
            trans_b: true,
            activation: Activation::None,
        }),
        &[mm, wg, cg],
    );
    let sm = b.one(
        Op::Softmax {
            axis: -1,
            legacy: false,
        },
        &[gemm],
    );
    let reds: Vec<ValueId> = [ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min]
        .into_iter()
        .map(|op| {
            b.one(
                Op::Reduce {
                    op,
                    axes: Some(vec![1, 2]),
                    keepdims: true,
                    noop_with_empty_axes: false,
                },
                &[parts[1]],
            )
        })
        .collect();
    let g = b.finish(&[sm, parts[0], reds[0], reds[1], reds[2], reds[3]]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    for batch in [2, 1, 3] {
        let x = input(&[batch, 4, 10, 10], 20 + batch as u64);
        check(&g, &[&x], &runner, 1e-4);
    }
    let on_cpu: Vec<_> = engines(&runner)
        .into_iter()
        .filter(|e| e.1 != "gpu")
        .collect();
    assert!(on_cpu.is_empty(), "on the CPU: {on_cpu:?}");
}

/// Ops the GPU lacks run on the CPU in the same plan, through transfers.
#[test]
fn unsupported_ops_fall_back_to_the_cpu() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input("x", DType::F32, fixed(&[1, 3, 6, 6]));
    let w = b.weights(&[5, 3, 3, 3], 5);
    let conv = b.conv(x, w, &[1, 1, 1, 1], Activation::Unary(UnaryOp::Relu));
    let lrn = b.one(
        Op::Lrn(LrnAttrs {
            alpha: 1e-3,
            beta: 0.75,
            bias: 1.0,
            size: 3,
        }),
        &[conv],
    );
    // Pads rows on both sides, crops the first column and pads one at the end.
    let pads = b.constant(Tensor::from_vec(vec![8], vec![0i64, 0, 1, -1, 0, 0, 1, 1]).unwrap());
    let pad = b.node(
        Op::Pad {
            pads: None,
            value: 0.5,
        },
        &[Some(lrn), Some(pads)],
        1,
    )[0];
    let neg = b.one(Op::Unary(UnaryOp::Neg), &[pad]);
    let idx = b.constant(Tensor::from_vec(vec![2], vec![0i64, -1]).unwrap());
    let gat = b.one(Op::Gather { axis: 1 }, &[neg, idx]);
    let sq = b.one(Op::Unary(UnaryOp::Sqrt), &[conv]);
    let g = b.finish(&[gat, sq]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let xt = input(&[1, 3, 6, 6], 6);
    check(&g, &[&xt], &runner, 1e-5);
    let e = engines(&runner);
    let engine_of = |op: &str| e.iter().find(|(n, _)| n.ends_with(op)).map(|x| x.1);
    assert_eq!(engine_of("_LRN"), Some("cpu"));
    assert_eq!(engine_of("_Pad"), Some("gpu"));
    // Constant indices: one copy per index on the GPU.
    assert_eq!(engine_of("_Gather"), Some("gpu"));
    assert_eq!(engine_of("_Neg"), Some("gpu"));
    assert_eq!(engine_of("_Sqrt"), Some("gpu"));
}

/// Convolutions over 64+ channels take their constant weights tap-major
/// (reordered at load) on software adapters such as lavapipe, and in ONNX's
/// order on GPUs: in place where the Conv is the weights' only reader,
/// as a copy where two Convs share them. Every result matches the CPU engine,
/// in both precisions.
#[test]
fn tap_major_weights_shared_or_not_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input("x", DType::F32, fixed(&[2, 64, 7, 6]));
    let shared = b.weights(&[64, 64, 3, 3], 21);
    let relu = Activation::Unary(UnaryOp::Relu);
    let c1 = b.conv(x, shared, &[1, 1, 1, 1], relu);
    let c2 = b.conv(c1, shared, &[1, 1, 1, 1], relu);
    let own = b.weights(&[16, 64, 3, 2], 22);
    let c3 = b.conv(c2, own, &[1, 0, 1, 1], Activation::None);
    let g = b.finish(&[c3]);
    let xt = input(&[2, 64, 7, 6], 23);
    for precision in [Precision::Native, Precision::F16] {
        let opts = GpuOptions {
            precision,
            ..Default::default()
        };
        let runner = GpuRunner::new(&g, &opts).unwrap();
        let tol = if precision == Precision::F16 {
            3e-2
        } else {
            1e-4
        };
        check(&g, &[&xt], &runner, tol);
        assert!(engines(&runner).iter().all(|e| e.1 == "gpu"));
    }
}

/// Rows of `table` (`rows × width`, row-major) at `ids` (negative from the end).
fn embed(table: &[f32], width: usize, ids: &[i64]) -> Vec<f32> {
    let rows = (table.len() / width) as i64;
    ids.iter()
        .flat_map(|&i| {
            let r = if i < 0 { i + rows } else { i } as usize;
            table[r * width..][..width].to_vec()
        })
        .collect()
}

/// Gather with indices known only at run time (token ids: a graph input, or a
/// CPU node's output) runs on the GPU, at every precision; an index out of
/// range is an error naming it, and the next run is served.
#[test]
fn gathers_indices_known_at_run_time() {
    if !gpu() {
        return;
    }
    let (rows, width) = (7, 5);
    let table_v = rand(rows * width, 21);
    let table_t = Tensor::from_vec(vec![rows, width], table_v.clone()).unwrap();
    // Ids straight from the input (BERT), and reshaped on the host first (GPT-2).
    for reshaped in [false, true] {
        let mut b = B::new();
        let ids_shape = if reshaped { vec![6] } else { vec![2, 3] };
        let ids = b.input("ids", DType::I64, fixed(&ids_shape));
        let table = b.constant(table_t.clone());
        let ids = if reshaped {
            let to = b.constant(Tensor::from_vec(vec![2], vec![2i64, 3]).unwrap());
            b.one(Op::Reshape { allowzero: false }, &[ids, to])
        } else {
            ids
        };
        let gat = b.one(Op::Gather { axis: 0 }, &[table, ids]);
        let out = b.one(Op::Unary(UnaryOp::Neg), &[gat]);
        let g = b.finish(&[out]);
        for precision in [Precision::Native, Precision::F16] {
            let opts = GpuOptions {
                precision,
                ..GpuOptions::default()
            };
            let runner = GpuRunner::new(&g, &opts).unwrap();
            let half = precision == Precision::F16 && runner.context().caps.f16;
            let e = engines(&runner);
            let gather = e.iter().find(|(n, _)| n.ends_with("_Gather")).unwrap();
            assert_eq!(gather.1, "gpu", "reshaped ids: {reshaped}");
            let run = |v: &[i64]| {
                runner.run(&[&Tensor::from_vec(ids_shape.clone(), v.to_vec()).unwrap()])
            };
            for v in [[0i64, 6, -1, 3, -7, 2], [5, 5, 0, -2, 1, 4]] {
                let got = run(&v).unwrap()[0].to_vec::<f32>().unwrap();
                let want: Vec<f32> = embed(&table_v, width, &v).iter().map(|x| -x).collect();
                let tol = if half { 2e-3 } else { 0.0 };
                for (k, (a, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - w).abs() <= tol * w.abs().max(1.0),
                        "element {k}: {a} vs {w}"
                    );
                }
            }
            // 2^33 shares its low word with 0: it must be refused, not read as row 0.
            for bad in [7i64, -8, 1 << 33] {
                let err = run(&[0, 1, bad, 2, 3, 4]).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("index {bad} is out of range")),
                    "{err}"
                );
            }
            let got = run(&[1, 1, 1, 1, 1, 1]).unwrap()[0]
                .to_vec::<f32>()
                .unwrap();
            assert!(
                (got[width + 2] + table_v[width + 2]).abs() <= 2e-3,
                "the run after an error"
            );
        }
    }
    // Indices along a middle axis of data computed on the GPU, as i32.
    let mut b = B::new();
    let x = b.input("x", DType::F32, fixed(&[2, 4, 3]));
    let ids = b.input("ids", DType::I32, fixed(&[5]));
    let y = b.one(Op::Unary(UnaryOp::Exp), &[x]);
    let gat = b.one(Op::Gather { axis: 1 }, &[y, ids]);
    let g = b.finish(&[gat]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let xt = input(&[2, 4, 3], 22);
    let idv = vec![3i32, 0, -1, 1, -4];
    let got = runner
        .run(&[&xt, &Tensor::from_vec(vec![5], idv.clone()).unwrap()])
        .unwrap();
    assert_eq!(got[0].shape(), &[2, 5, 3]);
    let (xv, gv) = (xt.to_vec::<f32>().unwrap(), got[0].to_vec::<f32>().unwrap());
    for o in 0..2 {
        for (j, &i) in idv.iter().enumerate() {
            let r = if i < 0 { i + 4 } else { i } as usize;
            for e in 0..3 {
                let want = xv[(o * 4 + r) * 3 + e].exp();
                let a = gv[(o * 5 + j) * 3 + e];
                assert!(
                    (a - want).abs() <= 1e-5 * want,
                    "({o}, {j}, {e}): {a} vs {want}"
                );
            }
        }
    }
    let e = engines(&runner);
    assert_eq!(
        e.iter().find(|(n, _)| n.ends_with("_Gather")).unwrap().1,
        "gpu"
    );
}

/// A shape decided by data (Split sizes fed at run time): the split runs on the
/// CPU and the nodes after it on the GPU, specialized for the sizes of each run.
#[test]
fn data_dependent_shapes_cut_the_plan() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input("x", DType::F32, fixed(&[6]));
    let sizes = b.input("sizes", DType::I64, fixed(&[2]));
    let neg_x = b.one(Op::Unary(UnaryOp::Neg), &[x]);
    let parts = b.node(
        Op::Split {
            axis: 0,
            sizes: None,
            num_outputs: 2,
        },
        &[Some(neg_x), Some(sizes)],
        2,
    );
    let relu = b.one(Op::Unary(UnaryOp::Relu), &[parts[0]]);
    let exp = b.one(Op::Unary(UnaryOp::Exp), &[parts[1]]);
    let g = b.finish(&[relu, exp]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let xs: Vec<f32> = vec![-2.0, 1.0, -0.5, 3.0, 0.25, -1.0];
    let xt = Tensor::from_vec(vec![6], xs.clone()).unwrap();
    for split in [[2i64, 4], [5, 1], [2, 4]] {
        let st = Tensor::from_vec(vec![2], split.to_vec()).unwrap();
        let outs = runner.run(&[&xt, &st]).unwrap();
        let k = split[0] as usize;
        let want_relu: Vec<f32> = xs[..k].iter().map(|v| (-v).max(0.0)).collect();
        let want_exp: Vec<f32> = xs[k..].iter().map(|v| (-v).exp()).collect();
        assert_eq!(outs[0].shape(), &[k]);
        assert_eq!(outs[0].to_vec::<f32>().unwrap(), want_relu);
        let got = outs[1].to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want_exp.len());
        for (a, b) in got.iter().zip(&want_exp) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
    }
    let e = engines(&runner);
    let engine_of = |op: &str| e.iter().find(|(n, _)| n.ends_with(op)).map(|x| x.1);
    assert_eq!(engine_of("_Neg"), Some("gpu"));
    assert_eq!(engine_of("_Split"), Some("cpu"));
    assert_eq!(engine_of("_Relu"), Some("gpu"));
    assert_eq!(engine_of("_Exp"), Some("gpu"));
}

/// INT64 stays 64-bit: on the GPU with SHADER_INT64, else on the CPU.
#[test]
fn int64_is_never_truncated() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input("x", DType::I64, fixed(&[4]));
    let c = b.constant(Tensor::from_vec(vec![4], vec![1i64 << 40, 3, -(1i64 << 35), 7]).unwrap());
    let m = b.one(Op::Binary(BinaryOp::Mul), &[x, c]);
    let a = b.one(Op::Binary(BinaryOp::Add), &[m, c]);
    let g = b.finish(&[a]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let xv = vec![3i64, 1 << 33, -2, i64::MAX / 7];
    let xt = Tensor::from_vec(vec![4], xv.clone()).unwrap();
    let got = runner.run(&[&xt]).unwrap();
    let cv = [1i64 << 40, 3, -(1i64 << 35), 7];
    let want: Vec<i64> = xv
        .iter()
        .zip(cv)
        .map(|(x, c)| x.wrapping_mul(c).wrapping_add(c))
        .collect();
    assert_eq!(got[0].to_vec::<i64>().unwrap(), want);
    let int64 = runner.context().caps.int64;
    for (name, engine) in engines(&runner) {
        assert_eq!(engine, if int64 { "gpu" } else { "cpu" }, "{name}");
    }
}

/// Several threads submit at once; each gets its own results.
#[test]
fn concurrent_submissions_from_several_threads() {
    if !gpu() {
        return;
    }
    let mut b = B::new();
    let x = b.input("x", DType::F32, fixed(&[2, 64]));
    let w = b.weights(&[64, 32], 9);
    let mm = b.one(
        Op::MatMul {
            activation: Activation::Unary(UnaryOp::Tanh),
        },
        &[x, w],
    );
    let g = b.finish(&[mm]);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let cpu = CpuPlan::new(g.clone());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (runner, cpu) = (&runner, &cpu);
            s.spawn(move || {
                for i in 0..25u64 {
                    let a = input(&[2, 64], t * 1000 + 2 * i);
                    let c = input(&[2, 64], t * 1000 + 2 * i + 1);
                    // Two in flight from this thread: the second's upload overlaps the first's compute.
                    let pa = runner.submit(&[&a]).unwrap();
                    let pc = runner.submit(&[&c]).unwrap();
                    let (ga, gc) = (pc.wait().unwrap(), pa.wait().unwrap());
                    assert!(rel_diff(&gc[0], &cpu.run(&[&a]).unwrap()[0]) < 1e-5);
                    assert!(rel_diff(&ga[0], &cpu.run(&[&c]).unwrap()[0]) < 1e-5);
                }
            });
        }
    });
}
