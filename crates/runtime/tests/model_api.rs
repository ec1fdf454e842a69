//! The public `Model` API on small ONNX models built here with the prost
//! messages: thread safety, input validation and load-time errors.

use metal_mps::{Error, Model, Options, Tensor};
use metal_mps_onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Model building
// ---------------------------------------------------------------------------

/// A dim of a declared shape: a number or a symbolic name.
#[derive(Clone, Copy)]
enum D {
    N(i64),
    S(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match *d {
                D::N(n) => dimension::Value::DimValue(n),
                D::S(s) => dimension::Value::DimParam(s.to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_string()),
        name: Some(name.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn float_initializer(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        producer_name: Some("model_api test".into()),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn load(bytes: &[u8]) -> metal_mps::Result<Model> {
    Model::from_bytes(bytes, None, &Options::default())
}

const C: [f32; 4] = [0.5, -1.0, 2.0, -0.25];

/// `y = Relu(x + c)`, x FLOAT [batch, 4], c a constant [4].
fn relu_add_model() -> Vec<u8> {
    model(GraphProto {
        name: Some("relu_add".into()),
        node: vec![
            node("Add", "add", &["x", "c"], &["s"]),
            node("Relu", "relu", &["s"], &["y"]),
        ],
        initializer: vec![float_initializer("c", &[4], &C)],
        input: vec![value_info("x", DataType::Float, &[D::S("batch"), D::N(4)])],
        output: vec![value_info("y", DataType::Float, &[D::S("batch"), D::N(4)])],
        ..Default::default()
    })
}

/// The naive expectation of [`relu_add_model`], in the same f32 arithmetic.
fn relu_add_expected(x: &[f32]) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| (v + C[i % 4]).max(0.0))
        .collect()
}

/// `y = a + b`, a and b FLOAT [batch, 3].
fn two_input_model() -> Vec<u8> {
    model(GraphProto {
        name: Some("two_inputs".into()),
        node: vec![node("Add", "add", &["a", "b"], &["y"])],
        input: vec![
            value_info("a", DataType::Float, &[D::S("batch"), D::N(3)]),
            value_info("b", DataType::Float, &[D::S("batch"), D::N(3)]),
        ],
        output: vec![value_info("y", DataType::Float, &[D::S("batch"), D::N(3)])],
        ..Default::default()
    })
}

fn f32s(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as u32 * 7 + seed * 13) % 17) as f32 * 0.5 - 4.0)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

// ---------------------------------------------------------------------------
// Thread safety
// ---------------------------------------------------------------------------

/// `Model` must be shareable between threads (checked at compile time).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Arc<Model>>();
};

#[test]
fn concurrent_runs_give_identical_results() {
    let model = Arc::new(load(&relu_add_model()).unwrap());
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    // Batch sizes vary per run so pooled slot buffers get resized.
                    let batch = 1 + ((t + i) % 5) as usize;
                    let x = f32s(&[batch, 4], t * 1000 + i);
                    let want = relu_add_expected(x.as_slice::<f32>().unwrap());
                    let out = model.run(&[("x", &x)]).unwrap();
                    assert_eq!(out.len(), 1);
                    assert_eq!(out[0].shape(), &[batch, 4]);
                    assert_eq!(out[0].to_vec::<f32>().unwrap(), want, "thread {t} run {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
}

fn int64_initializer(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![data.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// `y = Squeeze(Unsqueeze(Flatten(Neg(Reshape(r, [0, 2, 2]))))) · r` with
/// `r = Relu(x)`, x FLOAT [batch, 4]: the views whose input nobody reads
/// later take it over (the CPU engine moves it instead of copying), the
/// Reshape's input `r` is read again by the Mul and must stay intact.
fn views_model() -> Vec<u8> {
    model(GraphProto {
        name: Some("views".into()),
        node: vec![
            node("Relu", "relu", &["x"], &["r"]),
            node("Reshape", "reshape", &["r", "shape"], &["v"]),
            node("Neg", "neg", &["v"], &["n"]),
            node("Flatten", "flatten", &["n"], &["f"]),
            node("Unsqueeze", "unsqueeze", &["f", "axes"], &["u"]),
            node("Squeeze", "squeeze", &["u", "axes"], &["s"]),
            node("Mul", "mul", &["s", "r"], &["y"]),
        ],
        initializer: vec![
            int64_initializer("shape", &[0, 2, 2]),
            int64_initializer("axes", &[1]),
        ],
        input: vec![value_info("x", DataType::Float, &[D::S("batch"), D::N(4)])],
        output: vec![value_info("y", DataType::Float, &[D::S("batch"), D::N(4)])],
        ..Default::default()
    })
}

#[test]
fn views_moved_or_copied_give_the_same_results() {
    let model = Arc::new(load(&views_model()).unwrap());
    let threads: Vec<_> = (0..3u32)
        .map(|t| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                for i in 0..40u32 {
                    let batch = 1 + ((t + i) % 4) as usize;
                    let x = f32s(&[batch, 4], t * 100 + i);
                    let want: Vec<f32> = x
                        .as_slice::<f32>()
                        .unwrap()
                        .iter()
                        .map(|&v| -(v.max(0.0) * v.max(0.0)))
                        .collect();
                    let out = model.run(&[("x", &x)]).unwrap();
                    assert_eq!(out[0].shape(), &[batch, 4]);
                    assert_eq!(out[0].to_vec::<f32>().unwrap(), want, "thread {t} run {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
}

fn scalar_initializer(name: &str, v: f32) -> TensorProto {
    float_initializer(name, &[], &[v])
}

/// The exact GELU as PyTorch exports it (`Div` √2, `Erf`, `Add` 1, `Mul` x,
/// `Mul` 0.5) or with the halving first and `Mul` by 1/√2, on x FLOAT [batch, 5].
/// The exact GELU as exporters write it; `order` picks where the 0.5 goes:
/// 0: `(x · a) · 0.5`, 1: `(0.5 · x) · a`, 2: `(0.5 · a) · x` (dynamo), with
/// `a = 1 + erf(x / √2)`.
fn gelu_model(order: usize) -> Vec<u8> {
    let mut nodes = vec![
        if order == 1 {
            node("Mul", "scale", &["x", "inv_sqrt2"], &["d"])
        } else {
            node("Div", "scale", &["x", "sqrt2"], &["d"])
        },
        node("Erf", "erf", &["d"], &["e"]),
        node("Add", "plus_one", &["one", "e"], &["a"]),
    ];
    let (first, second) = match order {
        0 => (["x", "a"], ["m", "half"]),
        1 => (["half", "x"], ["m", "a"]),
        _ => (["half", "a"], ["x", "m"]),
    };
    nodes.push(node("Mul", "first", &first, &["m"]));
    nodes.push(node("Mul", "gelu", &second, &["y"]));
    model(GraphProto {
        name: Some("gelu".into()),
        node: nodes,
        initializer: vec![
            scalar_initializer("sqrt2", std::f32::consts::SQRT_2),
            scalar_initializer("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2),
            scalar_initializer("one", 1.0),
            scalar_initializer("half", 0.5),
        ],
        input: vec![value_info("x", DataType::Float, &[D::S("batch"), D::N(5)])],
        output: vec![value_info("y", DataType::Float, &[D::S("batch"), D::N(5)])],
        ..Default::default()
    })
}

#[test]
fn exported_gelu_runs_as_one_node() {
    for order in 0..3 {
        let model = load(&gelu_model(order)).unwrap();
        let ops: Vec<String> = model.nodes().iter().map(|n| n.op.clone()).collect();
        assert_eq!(ops, ["Gelu"], "order {order}");
        let x = f32s(&[3, 5], 7);
        let y = model.run(&[("x", &x)]).unwrap();
        for (&v, &got) in x
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(y[0].as_slice::<f32>().unwrap())
        {
            let v = v as f64;
            let want = 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
            assert!(
                (got as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{v}: {got} vs {want}"
            );
        }
    }
}

/// `Where(IsNaN(Softmax(x)), 0, v)`: PyTorch's guard after a masked softmax
/// when `v` is the softmax (`guarded`), else a select between different values.
fn nan_guard_model(guarded: bool) -> Vec<u8> {
    let v = if guarded { "p" } else { "x" };
    model(GraphProto {
        name: Some("nan_guard".into()),
        node: vec![
            node("Softmax", "softmax", &["x"], &["p"]),
            node("IsNaN", "isnan", &["p"], &["nan"]),
            node("Where", "where", &["nan", "zero", v], &["y"]),
        ],
        initializer: vec![scalar_initializer("zero", 0.0)],
        input: vec![value_info("x", DataType::Float, &[D::S("batch"), D::N(4)])],
        output: vec![value_info("y", DataType::Float, &[D::S("batch"), D::N(4)])],
        ..Default::default()
    })
}

#[test]
fn softmax_nan_guard_runs_as_one_step() {
    let other = load(&nan_guard_model(false)).unwrap();
    let ops: Vec<String> = other.nodes().iter().map(|n| n.op.clone()).collect();
    assert_eq!(ops, ["Softmax", "IsNaN", "Where"]);
    let model = load(&nan_guard_model(true)).unwrap();
    let ops: Vec<String> = model.nodes().iter().map(|n| n.op.clone()).collect();
    assert_eq!(ops, ["Softmax", "NanTo"]);
    let inf = f32::NEG_INFINITY;
    // The second row is masked out entirely: its softmax is NaN, the guard's 0.
    let x = Tensor::from_vec(vec![2, 4], vec![0.5f32, -1.0, 2.0, 0.0, inf, inf, inf, inf]).unwrap();
    let y = model.run(&[("x", &x)]).unwrap()[0].to_vec::<f32>().unwrap();
    let e: Vec<f64> = [0.5f64, -1.0, 2.0, 0.0].iter().map(|v| v.exp()).collect();
    let total: f64 = e.iter().sum();
    for (j, &got) in y[..4].iter().enumerate() {
        assert!((got as f64 - e[j] / total).abs() < 1e-6, "{j}: {got}");
    }
    assert_eq!(&y[4..], &[0.0; 4]);
}

#[test]
fn dynamic_batch_runs_at_batch_1_and_5() {
    let model = load(&relu_add_model()).unwrap();
    assert_eq!(model.inputs().len(), 1);
    assert_eq!(model.inputs()[0].name, "x");
    assert_eq!(
        model.inputs()[0].shape,
        vec![
            metal_mps::Dim::Sym("batch".into()),
            metal_mps::Dim::Fixed(4)
        ]
    );
    for batch in [1usize, 5, 1] {
        let x = f32s(&[batch, 4], batch as u32);
        let out = model.run(&[("x", &x)]).unwrap();
        assert_eq!(out[0].shape(), &[batch, 4]);
        assert_eq!(
            out[0].to_vec::<f32>().unwrap(),
            relu_add_expected(x.as_slice().unwrap())
        );
    }
}

// ---------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------

/// The error must be `InvalidInput` and its message must contain every needle.
fn expect_invalid_input(r: metal_mps::Result<Vec<Tensor>>, needles: &[&str]) {
    match r {
        Err(Error::InvalidInput(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
            }
        }
        Err(other) => panic!("expected Error::InvalidInput mentioning {needles:?}, got {other:?}"),
        Ok(_) => panic!("expected Error::InvalidInput mentioning {needles:?}, the run succeeded"),
    }
}

/// `a + b`, element by element.
fn sum(a: &Tensor, b: &Tensor) -> Vec<f32> {
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn valid_inputs_run() {
    let model = load(&two_input_model()).unwrap();
    let (a, b) = (f32s(&[2, 3], 1), f32s(&[2, 3], 2));
    let y = model.run(&[("b", &b), ("a", &a)]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), sum(&a, &b));
}

#[test]
fn inputs_in_declared_order_run() {
    let model = load(&two_input_model()).unwrap();
    let (a, b) = (f32s(&[2, 3], 1), f32s(&[2, 3], 2));
    let y = model.run_in_order(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), sum(&a, &b));
    expect_invalid_input(model.run_in_order(&[a]), &["1 inputs given", "has 2"]);
}

#[test]
fn wrong_dtype_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let a = Tensor::from_vec(vec![2, 3], vec![1i32; 6]).unwrap();
    let b = f32s(&[2, 3], 0);
    expect_invalid_input(
        model.run(&[("a", &a), ("b", &b)]),
        &["'a'", "FLOAT", "INT32"],
    );
}

#[test]
fn wrong_rank_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let a = f32s(&[2, 3], 0);
    let b = f32s(&[6], 0);
    expect_invalid_input(model.run(&[("a", &a), ("b", &b)]), &["'b'", "rank"]);
    let b = f32s(&[1, 2, 3], 0);
    expect_invalid_input(model.run(&[("a", &a), ("b", &b)]), &["'b'", "rank"]);
}

#[test]
fn wrong_fixed_dim_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let a = f32s(&[2, 4], 0);
    let b = f32s(&[2, 3], 0);
    expect_invalid_input(model.run(&[("a", &a), ("b", &b)]), &["'a'", "3"]);
}

#[test]
fn missing_input_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let a = f32s(&[2, 3], 0);
    expect_invalid_input(model.run(&[("a", &a)]), &["missing", "'b'"]);
    expect_invalid_input(model.run(&[]), &["missing"]);
}

#[test]
fn unknown_input_name_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let (a, b) = (f32s(&[2, 3], 0), f32s(&[2, 3], 0));
    expect_invalid_input(
        model.run(&[("a", &a), ("b", &b), ("bogus", &b)]),
        &["'bogus'"],
    );
}

#[test]
fn duplicated_input_is_invalid_input() {
    let model = load(&two_input_model()).unwrap();
    let (a, b) = (f32s(&[2, 3], 0), f32s(&[2, 3], 0));
    expect_invalid_input(model.run(&[("a", &a), ("b", &b), ("a", &a)]), &["'a'"]);
}

#[test]
fn symbolic_dim_must_agree_across_inputs() {
    let model = load(&two_input_model()).unwrap();
    let a = f32s(&[2, 3], 0);
    let b = f32s(&[5, 3], 0);
    expect_invalid_input(
        model.run(&[("a", &a), ("b", &b)]),
        &["batch", "'a'", "'b'", "2", "5"],
    );
}

// ---------------------------------------------------------------------------
// Load errors
// ---------------------------------------------------------------------------

fn load_error(bytes: &[u8]) -> Error {
    match std::panic::catch_unwind(|| load(bytes)) {
        Ok(Ok(_)) => panic!("the model loaded but should have been refused"),
        Ok(Err(e)) => e,
        Err(_) => panic!("loading panicked instead of returning an error"),
    }
}

#[test]
fn truncated_model_is_a_decoding_error() {
    let bytes = relu_add_model();
    assert!(load(&bytes).is_ok());
    for cut in [bytes.len() / 2, bytes.len() - 1, 1] {
        let e = load_error(&bytes[..cut]);
        let msg = e.to_string().to_lowercase();
        assert!(
            msg.contains("protobuf") || msg.contains("decod"),
            "cut at {cut}: {msg}"
        );
        assert!(matches!(e, Error::InvalidModel(_)), "{e:?}");
    }
}

#[test]
fn unknown_op_names_the_op_type_and_the_node() {
    let bytes = model(GraphProto {
        node: vec![
            node("Relu", "first", &["x"], &["r"]),
            node("FrobnicateOp", "the_frobnicator", &["r"], &["y"]),
        ],
        input: vec![value_info("x", DataType::Float, &[D::N(2)])],
        output: vec![value_info("y", DataType::Float, &[D::N(2)])],
        ..Default::default()
    });
    let msg = load_error(&bytes).to_string();
    assert!(msg.contains("FrobnicateOp"), "{msg}");
    assert!(msg.contains("the_frobnicator"), "{msg}");
}

#[test]
fn fp64_model_runs_in_fp64() {
    let bytes = model(GraphProto {
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        input: vec![value_info("x", DataType::Double, &[D::N(3)])],
        output: vec![value_info("y", DataType::Double, &[D::N(3)])],
        ..Default::default()
    });
    let model = load(&bytes).unwrap();
    // 1 + 2^-40 is not a float32: the value must come back exactly.
    let x = Tensor::from_vec(vec![3], vec![-1.5f64, 1.0 + 2f64.powi(-40), 0.0]).unwrap();
    let y = model.run(&[("x", &x)]).unwrap();
    assert_eq!(
        y[0].to_vec::<f64>().unwrap(),
        vec![0.0, 1.0 + 2f64.powi(-40), 0.0]
    );
}

#[test]
fn string_tensors_pass_through_element_movers() {
    let bytes = model(GraphProto {
        node: vec![node("Identity", "id", &["x"], &["y"])],
        input: vec![value_info("x", DataType::String, &[D::N(2)])],
        output: vec![value_info("y", DataType::String, &[D::N(2)])],
        ..Default::default()
    });
    let model = load(&bytes).unwrap();
    let x = Tensor::from_strings(vec![2], vec![b"ab".to_vec(), "é".as_bytes().to_vec()]).unwrap();
    let y = model.run(&[("x", &x)]).unwrap();
    assert_eq!(y[0].as_strings().unwrap(), x.as_strings().unwrap());
}

#[test]
fn string_input_to_arithmetic_is_refused_naming_the_type() {
    let bytes = model(GraphProto {
        node: vec![node("Add", "add", &["x", "x"], &["y"])],
        input: vec![value_info("x", DataType::String, &[D::N(2)])],
        output: vec![value_info("y", DataType::String, &[D::N(2)])],
        ..Default::default()
    });
    let msg = load_error(&bytes).to_string();
    assert!(msg.contains("STRING") && msg.contains("add"), "{msg}");
}

#[test]
fn mixed_float_widths_are_a_dtype_error() {
    let bytes = model(GraphProto {
        node: vec![node("Add", "add", &["x", "c"], &["y"])],
        initializer: vec![TensorProto {
            name: Some("c".into()),
            dims: vec![2],
            data_type: Some(DataType::Double as i32),
            double_data: vec![1.0, 2.0],
            ..Default::default()
        }],
        input: vec![value_info("x", DataType::Float, &[D::N(2)])],
        output: vec![value_info("y", DataType::Float, &[D::N(2)])],
        ..Default::default()
    });
    let msg = load_error(&bytes).to_string();
    assert!(
        msg.contains("'add'") && msg.contains("FLOAT") && msg.contains("DOUBLE"),
        "{msg}"
    );
}

#[test]
fn huge_declared_initializer_without_data_is_refused() {
    for dims in [
        vec![1i64 << 40, 1 << 40],
        vec![1 << 40],
        vec![1 << 20, 1 << 20, 1 << 20, 1 << 20],
    ] {
        let bytes = model(GraphProto {
            node: vec![node("Add", "add", &["x", "big"], &["y"])],
            initializer: vec![TensorProto {
                name: Some("big".into()),
                dims: dims.clone(),
                data_type: Some(DataType::Float as i32),
                ..Default::default()
            }],
            input: vec![value_info("x", DataType::Float, &[D::N(1)])],
            output: vec![value_info("y", DataType::Float, &[D::N(1)])],
            ..Default::default()
        });
        let e = load_error(&bytes);
        assert!(e.to_string().contains("big"), "dims {dims:?}: {e}");
    }
}

#[test]
fn negative_initializer_dim_is_refused() {
    let bytes = model(GraphProto {
        node: vec![node("Add", "add", &["x", "c"], &["y"])],
        initializer: vec![float_initializer("c", &[-1], &[1.0])],
        input: vec![value_info("x", DataType::Float, &[D::N(1)])],
        output: vec![value_info("y", DataType::Float, &[D::N(1)])],
        ..Default::default()
    });
    load_error(&bytes);
}

#[test]
fn initializer_with_too_little_data_is_refused() {
    let bytes = model(GraphProto {
        node: vec![node("Add", "add", &["x", "c"], &["y"])],
        initializer: vec![float_initializer("c", &[4], &[1.0, 2.0])],
        input: vec![value_info("x", DataType::Float, &[D::N(4)])],
        output: vec![value_info("y", DataType::Float, &[D::N(4)])],
        ..Default::default()
    });
    let msg = load_error(&bytes).to_string();
    assert!(msg.contains("'c'"), "{msg}");
}

#[test]
fn empty_and_garbage_bytes_are_errors() {
    load_error(&[]);
    load_error(&[0xFF; 64]);
    load_error(b"this is not an onnx model at all");
}
