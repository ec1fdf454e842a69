//! If and Loop bodies that read outer-scope values (through two levels of
//! nesting), imported from hand-built ModelProtos and run through the graph
//! passes and the CPU plan; results checked against hand-computed values.

use metal_mps_cpu::{CpuEvaluator, CpuPlan};
use metal_mps_ir::{passes, BoolByte, Tensor};
use metal_mps_onnx::parse_model;
use metal_mps_onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

fn value(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    init: Vec<TensorProto>,
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: init,
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Float as i32),
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn model(g: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(g),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Outer graph: inputs x: float[2], flag: bool; initializers c = [10, 20], m = 3.
///   y = If(flag, then: x + c, else: x * c)
///   (s, scan) = Loop(m, "", x) with body (i, cond, s):
///       t = s + c
///       u = If(flag, then: t + x, else: Identity(t))   (x read from the outermost graph)
///       -> (cond, u, u)
fn control_model() -> Vec<u8> {
    let f = DataType::Float;
    let then_if = graph(
        "then",
        vec![node("Add", "then_add", &["x", "c"], &["y_then"])],
        vec![],
        vec![value("y_then", f, &[2])],
        vec![],
    );
    let else_if = graph(
        "else",
        vec![node("Mul", "else_mul", &["x", "c"], &["y_else"])],
        vec![],
        vec![value("y_else", f, &[2])],
        vec![],
    );
    let mut if_node = node("If", "outer_if", &["flag"], &["y"]);
    if_node.attribute = vec![
        graph_attr("then_branch", then_if),
        graph_attr("else_branch", else_if),
    ];

    let inner_then = graph(
        "inner_then",
        vec![node("Add", "inner_add", &["t", "x"], &["u_then"])],
        vec![],
        vec![value("u_then", f, &[2])],
        vec![],
    );
    let inner_else = graph(
        "inner_else",
        vec![node("Identity", "inner_id", &["t"], &["u_else"])],
        vec![],
        vec![value("u_else", f, &[2])],
        vec![],
    );
    let mut inner_if = node("If", "inner_if", &["flag"], &["u"]);
    inner_if.attribute = vec![
        graph_attr("then_branch", inner_then),
        graph_attr("else_branch", inner_else),
    ];
    let body = graph(
        "body",
        vec![
            node("Add", "body_add", &["s", "c"], &["t"]),
            inner_if,
            node("Identity", "cond_id", &["cond"], &["cond_out"]),
            node("Identity", "scan_id", &["u"], &["scan_u"]),
        ],
        vec![
            value("i", DataType::Int64, &[]),
            value("cond", DataType::Bool, &[]),
            value("s", f, &[2]),
        ],
        vec![
            value("cond_out", DataType::Bool, &[]),
            value("u", f, &[2]),
            value("scan_u", f, &[2]),
        ],
        vec![],
    );
    let mut loop_node = node("Loop", "outer_loop", &["m", "", "x"], &["s_final", "scans"]);
    loop_node.attribute = vec![graph_attr("body", body)];
    let m = TensorProto {
        name: Some("m".into()),
        dims: vec![],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![3],
        ..Default::default()
    };
    model(graph(
        "main",
        vec![if_node, loop_node],
        vec![value("x", f, &[2]), value("flag", DataType::Bool, &[])],
        vec![
            value("y", f, &[2]),
            value("s_final", f, &[2]),
            value("scans", f, &[3, 2]),
        ],
        vec![floats("c", &[10.0, 20.0]), m],
    ))
}

fn run(bytes: &[u8], inputs: &[&Tensor]) -> metal_mps_ir::Result<Vec<Tensor>> {
    let mut g = parse_model(bytes, None)?.graph;
    passes::optimize(&mut g, &CpuEvaluator)?;
    CpuPlan::new(g).run(inputs)
}

#[test]
fn if_and_loop_read_outer_values() {
    let bytes = control_model();
    let imported = parse_model(&bytes, None).unwrap();
    // Inference sees through the bodies: the loop runs a constant 3 times.
    let g = &imported.graph;
    let scans = g.outputs[2];
    assert_eq!(
        g.values[scans].shape,
        Some(metal_mps_ir::from_fixed(&[3, 2]))
    );
    let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    let yes = Tensor::scalar(BoolByte(1));
    let no = Tensor::scalar(BoolByte(0));

    let out = run(&bytes, &[&x, &yes]).unwrap();
    // then: x + c
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![11.0, 22.0]);
    // s <- s + c + x, three times from x: [12, 24], [23, 46], [34, 68].
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![34.0, 68.0]);
    assert_eq!(out[2].shape(), &[3, 2]);
    assert_eq!(
        out[2].to_vec::<f32>().unwrap(),
        vec![12.0, 24.0, 23.0, 46.0, 34.0, 68.0]
    );

    let out = run(&bytes, &[&x, &no]).unwrap();
    // else: x * c
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![10.0, 40.0]);
    // s <- s + c: [11, 22], [21, 42], [31, 62].
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![31.0, 62.0]);
    assert_eq!(
        out[2].to_vec::<f32>().unwrap(),
        vec![11.0, 22.0, 21.0, 42.0, 31.0, 62.0]
    );
}

#[test]
fn error_inside_a_body_names_outer_and_inner_node() {
    // The branch adds x: float[2] to an outer value d: float[3] (shapes known only at run time).
    let f = DataType::Float;
    let then_b = graph(
        "then",
        vec![node("Add", "bad_add", &["x", "d"], &["y_then"])],
        vec![],
        vec![value("y_then", f, &[])],
        vec![],
    );
    let else_b = graph(
        "else",
        vec![node("Identity", "fine", &["x"], &["y_else"])],
        vec![],
        vec![value("y_else", f, &[])],
        vec![],
    );
    let mut if_node = node("If", "the_if", &["flag"], &["y"]);
    if_node.attribute = vec![
        graph_attr("then_branch", then_b),
        graph_attr("else_branch", else_b),
    ];
    let mut x = value("x", f, &[]);
    let mut d = value("d", f, &[]);
    // Unknown rank: drop the shapes.
    for v in [&mut x, &mut d] {
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    let bytes = model(graph(
        "main",
        vec![if_node],
        vec![x, d, value("flag", DataType::Bool, &[])],
        vec![value("y", f, &[])],
        vec![],
    ));
    let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    let d = Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap();
    let yes = Tensor::scalar(BoolByte(1));
    let no = Tensor::scalar(BoolByte(0));
    assert_eq!(
        run(&bytes, &[&x, &d, &no]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0, 2.0]
    );
    let err = run(&bytes, &[&x, &d, &yes]).unwrap_err().to_string();
    assert!(err.contains("the_if"), "{err}");
    assert!(err.contains("bad_add"), "{err}");
    assert!(
        err.find("the_if").unwrap() < err.find("bad_add").unwrap(),
        "{err}"
    );
}

#[test]
fn local_functions_are_inlined_with_attribute_references() {
    use metal_mps_onnx::proto::FunctionProto;
    // AddTwice(a, b) = (a + b) + b; ScaleBy(a) = a * Constant(value_float = @scale).
    let add_twice = FunctionProto {
        name: Some("AddTwice".into()),
        domain: Some("local".into()),
        input: vec!["a".into(), "b".into()],
        output: vec!["r".into()],
        node: vec![
            node("Add", "first", &["a", "b"], &["tmp"]),
            node("Add", "second", &["tmp", "b"], &["r"]),
        ],
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        ..Default::default()
    };
    let mut constant = node("Constant", "k", &[], &["k"]);
    constant.attribute = vec![AttributeProto {
        name: Some("value_float".into()),
        r#type: Some(AttributeType::Float as i32),
        ref_attr_name: Some("scale".into()),
        ..Default::default()
    }];
    let scale_by = FunctionProto {
        name: Some("ScaleBy".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["r".into()],
        attribute: vec!["scale".into()],
        node: vec![constant, node("Mul", "mul", &["a", "k"], &["r"])],
        ..Default::default()
    };
    let f = DataType::Float;
    let mut call1 = node("AddTwice", "call1", &["x", "y"], &["t"]);
    call1.domain = Some("local".into());
    // A second call: its internal value 'tmp' must not clash with the first's.
    let mut call2 = node("AddTwice", "call2", &["t", "y"], &["u"]);
    call2.domain = Some("local".into());
    let mut call3 = node("ScaleBy", "call3", &["u"], &["z"]);
    call3.domain = Some("local".into());
    call3.attribute = vec![AttributeProto {
        name: Some("scale".into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(0.5),
        ..Default::default()
    }];
    let bytes = ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            },
            OperatorSetIdProto {
                domain: Some("local".into()),
                version: Some(1),
            },
        ],
        functions: vec![add_twice, scale_by],
        graph: Some(graph(
            "main",
            vec![call1, call2, call3],
            vec![value("x", f, &[2]), value("y", f, &[2])],
            vec![value("z", f, &[2])],
            vec![],
        )),
        ..Default::default()
    }
    .encode_to_vec();
    let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    let y = Tensor::from_vec(vec![2], vec![10f32, 100.0]).unwrap();
    // t = x + 2y = [21, 202]; u = t + 2y = [41, 402]; z = u / 2.
    let out = run(&bytes, &[&x, &y]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![20.5, 201.0]);
}
