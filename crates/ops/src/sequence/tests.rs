//! Cases the node suite lacks: ConcatFromSequence and SplitToSequence shapes
//! (expected values worked out with numpy's concatenate / stack / array_split),
//! negative positions, and the errors of bad positions and empty optionals.

use crate::{build, Attribute, Attributes, BuildCx};
use metal_mps_ir::{Datum, Op, Out, Tensor};
use std::collections::HashMap;

fn op(name: &str, attrs: &[(&str, Attribute)], n_in: usize, opset: i64) -> Op {
    let map: HashMap<String, Attribute> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let attrs = Attributes::new(map);
    build(&BuildCx {
        op_type: name,
        domain: "",
        opset,
        attrs: &attrs,
        num_inputs: n_in,
        num_outputs: 1,
    })
    .unwrap()
}

fn run(op: &Op, inputs: &[Option<&Datum>]) -> metal_mps_ir::Result<Datum> {
    let Op::Dyn(d) = op else {
        panic!("not an operator module")
    };
    Ok(d.eval_data(inputs, 1, &mut Out::fresh())?.remove(0))
}

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn seq(d: &Datum) -> Vec<(Vec<usize>, Vec<f32>)> {
    d.sequence()
        .unwrap()
        .iter()
        .map(|t| (t.shape().to_vec(), t.to_vec::<f32>().unwrap()))
        .collect()
}

#[test]
fn concat_from_sequence_joins_and_stacks() {
    let s = Datum::Sequence(vec![t(&[2, 1], &[1., 2.]), t(&[2, 2], &[3., 4., 5., 6.])]);
    let cat = op("ConcatFromSequence", &[("axis", Attribute::Int(-1))], 1, 11);
    let out = run(&cat, &[Some(&s)]).unwrap().into_tensor().unwrap();
    // np.concatenate([[[1],[2]], [[3,4],[5,6]]], axis=-1)
    assert_eq!(out.shape(), &[2, 3]);
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![1., 3., 4., 2., 5., 6.]);

    let s = Datum::Sequence(vec![t(&[2], &[1., 2.]), t(&[2], &[3., 4.])]);
    let stack = op(
        "ConcatFromSequence",
        &[("axis", Attribute::Int(1)), ("new_axis", Attribute::Int(1))],
        1,
        11,
    );
    let out = run(&stack, &[Some(&s)]).unwrap().into_tensor().unwrap();
    // np.stack([[1,2],[3,4]], axis=1)
    assert_eq!(out.shape(), &[2, 2]);
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![1., 3., 2., 4.]);

    let empty = Datum::Sequence(vec![]);
    let err = run(&cat, &[Some(&empty)]).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn split_to_sequence_by_scalar_leaves_a_shorter_last_piece() {
    let x = Datum::Tensor(t(&[5], &[1., 2., 3., 4., 5.]));
    let two = Datum::Tensor(Tensor::scalar(2i64));
    let split = op("SplitToSequence", &[], 2, 11);
    let out = run(&split, &[Some(&x), Some(&two)]).unwrap();
    // np.array_split at [2, 4]
    assert_eq!(
        seq(&out),
        vec![
            (vec![2], vec![1., 2.]),
            (vec![2], vec![3., 4.]),
            (vec![1], vec![5.])
        ]
    );
    let no_keep = op("SplitToSequence", &[("keepdims", Attribute::Int(0))], 1, 11);
    let out = run(&no_keep, &[Some(&x)]).unwrap();
    assert_eq!(seq(&out)[4], (vec![], vec![5.]));
}

#[test]
fn positions_count_from_the_end_and_are_checked() {
    let s = Datum::Sequence(vec![t(&[1], &[1.]), t(&[1], &[2.])]);
    let at = op("SequenceAt", &[], 2, 11);
    let minus_one = Datum::Tensor(Tensor::scalar(-1i32));
    let got = run(&at, &[Some(&s), Some(&minus_one)]).unwrap();
    assert_eq!(got.tensor().unwrap().to_vec::<f32>().unwrap(), vec![2.]);
    let two = Datum::Tensor(Tensor::scalar(2i64));
    let err = run(&at, &[Some(&s), Some(&two)]).unwrap_err().to_string();
    assert!(err.contains("position 2 is outside [-2, 1]"), "{err}");

    let insert = op("SequenceInsert", &[], 3, 11);
    let x = Datum::Tensor(t(&[1], &[9.]));
    let minus_two = Datum::Tensor(Tensor::scalar(-2i64));
    let got = run(&insert, &[Some(&s), Some(&x), Some(&minus_two)]).unwrap();
    assert_eq!(
        seq(&got).iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        vec![9., 1., 2.]
    );
    let erase = op("SequenceErase", &[], 1, 11);
    let got = run(&erase, &[Some(&s)]).unwrap();
    assert_eq!(seq(&got), vec![(vec![1], vec![1.])]);
}

#[test]
fn an_empty_optional_has_no_element_to_get() {
    let none = Datum::Optional(None);
    let has = op("OptionalHasElement", &[], 1, 18);
    let got = run(&has, &[Some(&none)]).unwrap();
    assert_eq!(got.tensor().unwrap().scalar_f64().unwrap(), 0.0);
    let got = run(&has, &[None]).unwrap();
    assert_eq!(got.tensor().unwrap().scalar_f64().unwrap(), 0.0);
    let get = op("OptionalGetElement", &[], 1, 18);
    let err = run(&get, &[Some(&none)]).unwrap_err().to_string();
    assert!(err.contains("the optional is empty"), "{err}");
}
