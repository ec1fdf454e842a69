//! Hand-checked cases the node suite lacks: errors on bad indices, scalar and
//! short-condition edge cases, unsorted Unique along an axis, TopK's opset-1
//! attribute.

use crate::{Attribute, Attributes, BuildCx};
use metal_mps_ir::{Op, Out, Result, Tensor};
use std::collections::HashMap;

fn run(
    op_type: &str,
    opset: i64,
    attrs: Vec<(&str, Attribute)>,
    ins: Vec<Option<Tensor>>,
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let attrs = Attributes::new(
        attrs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    );
    let cx = BuildCx {
        op_type,
        domain: "",
        opset,
        attrs: &attrs,
        num_inputs: ins.len(),
        num_outputs: n_out,
    };
    let Op::Dyn(op) = crate::build(&cx)? else {
        panic!("{op_type} is not a Dyn op");
    };
    let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
    op.eval(&refs, n_out, &mut Out::fresh())
}

fn f32s(shape: Vec<usize>, v: &[f32]) -> Option<Tensor> {
    Some(Tensor::from_slice(shape, v).unwrap())
}

fn i64s(shape: Vec<usize>, v: &[i64]) -> Option<Tensor> {
    Some(Tensor::from_slice(shape, v).unwrap())
}

#[test]
fn gather_elements_rejects_out_of_range_indices() {
    let r = run(
        "GatherElements",
        13,
        vec![],
        vec![f32s(vec![2], &[1.0, 2.0]), i64s(vec![1], &[2])],
        1,
    );
    assert!(r.unwrap_err().to_string().contains("out of range"));
    // -2 wraps to 0.
    let y = run(
        "GatherElements",
        13,
        vec![],
        vec![f32s(vec![2], &[1.0, 2.0]), i64s(vec![1], &[-2])],
        1,
    )
    .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.0]);
}

#[test]
fn scatter_elements_add_accumulates_duplicates_on_axis_1() {
    // data [[1,2,3]], indices [[0,0,2]], updates [[10,20,30]] -> [[31,2,33]].
    let y = run(
        "ScatterElements",
        18,
        vec![
            ("axis", Attribute::Int(1)),
            ("reduction", Attribute::String(b"add".to_vec())),
        ],
        vec![
            f32s(vec![1, 3], &[1., 2., 3.]),
            i64s(vec![1, 3], &[0, 0, 2]),
            f32s(vec![1, 3], &[10., 20., 30.]),
        ],
        1,
    )
    .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![31., 2., 33.]);
    let bad = run(
        "ScatterElements",
        18,
        vec![],
        vec![
            f32s(vec![2], &[1., 2.]),
            i64s(vec![1], &[5]),
            f32s(vec![1], &[1.]),
        ],
        1,
    );
    assert!(bad.is_err());
}

#[test]
fn nonzero_of_a_scalar_and_compress_with_a_short_condition() {
    let y = run("NonZero", 13, vec![], vec![f32s(vec![], &[3.0])], 1).unwrap();
    assert_eq!(y[0].shape(), &[1, 1]);
    assert_eq!(y[0].to_vec::<i64>().unwrap(), vec![0]);
    // Condition [false, true] on axis 1 of [[1,2,3],[4,5,6]] -> [[2],[5]].
    let cond = Tensor::from_slice(
        vec![2],
        &[metal_mps_ir::BoolByte(0), metal_mps_ir::BoolByte(1)],
    )
    .unwrap();
    let y = run(
        "Compress",
        11,
        vec![("axis", Attribute::Int(1))],
        vec![f32s(vec![2, 3], &[1., 2., 3., 4., 5., 6.]), Some(cond)],
        1,
    )
    .unwrap();
    assert_eq!(y[0].shape(), &[2, 1]);
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![2., 5.]);
}

#[test]
fn unique_unsorted_along_axis_0() {
    // Rows [3,1], [0,2], [3,1], [0,2], [5,5]: first occurrences 0, 1, 4.
    let x = f32s(vec![5, 2], &[3., 1., 0., 2., 3., 1., 0., 2., 5., 5.]);
    let y = run(
        "Unique",
        11,
        vec![("sorted", Attribute::Int(0)), ("axis", Attribute::Int(0))],
        vec![x],
        4,
    )
    .unwrap();
    assert_eq!(y[0].shape(), &[3, 2]);
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![3., 1., 0., 2., 5., 5.]);
    assert_eq!(y[1].to_vec::<i64>().unwrap(), vec![0, 1, 4]);
    assert_eq!(y[2].to_vec::<i64>().unwrap(), vec![0, 1, 0, 1, 2]);
    assert_eq!(y[3].to_vec::<i64>().unwrap(), vec![2, 2, 1]);
}

#[test]
fn topk_opset_1_attribute_smallest_ties() {
    // Opset 1 (k attribute, always largest): [1, 3, 3, 2] k=2 -> 3 (index 1), 3 (index 2).
    let y = run(
        "TopK",
        1,
        vec![("k", Attribute::Int(2))],
        vec![f32s(vec![4], &[1., 3., 3., 2.])],
        2,
    )
    .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![3., 3.]);
    assert_eq!(y[1].to_vec::<i64>().unwrap(), vec![1, 2]);
    // Opset 11, largest=0, int32 along axis 0 of [[4,1],[2,1],[2,0]], k=2.
    let x = Some(Tensor::from_slice(vec![3, 2], &[4i32, 1, 2, 1, 2, 0]).unwrap());
    let y = run(
        "TopK",
        11,
        vec![("largest", Attribute::Int(0)), ("axis", Attribute::Int(0))],
        vec![x, i64s(vec![1], &[2])],
        2,
    )
    .unwrap();
    assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![2, 0, 2, 1]);
    assert_eq!(y[1].to_vec::<i64>().unwrap(), vec![1, 2, 2, 0]);
    let too_big = run(
        "TopK",
        11,
        vec![],
        vec![f32s(vec![2], &[1., 2.]), i64s(vec![1], &[3])],
        2,
    );
    assert!(too_big.is_err());
}

#[test]
fn tensor_scatter_linear_write_past_the_end_is_an_error() {
    let cache = f32s(vec![1, 2, 1], &[0., 0.]);
    let upd = f32s(vec![1, 2, 1], &[1., 2.]);
    let r = run(
        "TensorScatter",
        24,
        vec![],
        vec![cache, upd, i64s(vec![1], &[1])],
        1,
    );
    assert!(r.is_err());
}

#[test]
fn nms_without_max_output_selects_nothing() {
    let boxes = f32s(vec![1, 1, 4], &[0., 0., 1., 1.]);
    let scores = f32s(vec![1, 1, 1], &[0.9]);
    let y = run("NonMaxSuppression", 11, vec![], vec![boxes, scores], 1).unwrap();
    assert_eq!(y[0].shape(), &[0, 3]);
}

/// GatherND's picked rows (what the GPU gathers) are the rows `eval` returns,
/// with and without batch dims and with negative indices; an index out of range
/// picks nothing (`eval` reports it).
#[test]
fn gather_nd_picked_rows_are_what_eval_picks() {
    let x = Tensor::from_vec(vec![2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
    let cases: [(i64, Vec<usize>, Vec<i64>); 4] = [
        (0, vec![3, 2], vec![1, 2, 0, -1, -2, 0]),
        (0, vec![2, 1], vec![1, -2]),
        (1, vec![2, 2, 1], vec![2, 0, -1, 1]),
        (0, vec![1, 3], vec![1, 2, 3]),
    ];
    for (batch_dims, ishape, idx) in cases {
        let op = gather_nd(batch_dims);
        let i = Tensor::from_vec(ishape.clone(), idx.clone()).unwrap();
        let ins = [Some(&x), Some(&i)];
        let want = op.eval(&ins, 1, &mut Out::fresh()).unwrap().remove(0);
        let picked = op.picked_rows(x.shape(), &ins).unwrap();
        let xs = x.as_slice::<f32>().unwrap();
        let got: Vec<f32> = picked
            .rows
            .iter()
            .flat_map(|&r| xs[r * picked.row..][..picked.row].to_vec())
            .collect();
        assert_eq!(got, want.as_slice::<f32>().unwrap(), "{ishape:?} {idx:?}");
    }
    let i = Tensor::from_vec(vec![1, 2], vec![2i64, 0]).unwrap();
    let op = gather_nd(0);
    assert!(op.picked_rows(x.shape(), &[Some(&x), Some(&i)]).is_none());
    assert!(op
        .eval(&[Some(&x), Some(&i)], 1, &mut Out::fresh())
        .is_err());
}

fn gather_nd(batch_dims: i64) -> metal_mps_ir::DynOp {
    let attrs = Attributes::new(HashMap::from([(
        "batch_dims".to_string(),
        Attribute::Int(batch_dims),
    )]));
    let cx = BuildCx {
        op_type: "GatherND",
        domain: "",
        opset: 13,
        attrs: &attrs,
        num_inputs: 2,
        num_outputs: 1,
    };
    match crate::build(&cx).unwrap() {
        Op::Dyn(op) => op,
        _ => panic!("GatherND is not a Dyn op"),
    }
}
