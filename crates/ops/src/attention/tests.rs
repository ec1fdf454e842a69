//! Hand-checked cases the node suite lacks: per-group GroupNormalization
//! parameters (opset 18), L1 norms of negative values, an attention row worked
//! out by hand, grouped heads with a fully masked row, an offset causal mask
//! over a past cache, and a single rotation.

use super::OPS;
use crate::{Attribute, Attributes, BuildCx};
use metal_mps_ir::{BoolByte, Op, Out, Tensor};
use std::collections::HashMap;

fn build(name: &str, opset: i64, attrs: &[(&str, Attribute)], n_in: usize, n_out: usize) -> Op {
    let map: HashMap<String, Attribute> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let attrs = Attributes::new(map);
    let cx = BuildCx {
        op_type: name,
        domain: "",
        opset,
        attrs: &attrs,
        num_inputs: n_in,
        num_outputs: n_out,
    };
    let row = OPS
        .iter()
        .filter(|r| r.name == name && r.since <= opset)
        .max_by_key(|r| r.since)
        .expect("registered");
    (row.build)(&cx).expect("builds")
}

fn run(op: &Op, ins: &[Option<&Tensor>], n_out: usize) -> Vec<Vec<f64>> {
    let Op::Dyn(d) = op else {
        panic!("not a Dyn op")
    };
    d.eval(ins, n_out, &mut Out::fresh())
        .expect("evaluates")
        .iter()
        .map(|t| t.to_f64_vec())
        .collect()
}

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn layer_norm_rows_and_statistics() {
    let op = build("LayerNormalization", 17, &[], 3, 3);
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);
    let (s, b) = (t(&[3], &[1.0, 2.0, 1.0]), t(&[3], &[0.0, 0.0, 1.0]));
    let out = run(&op, &[Some(&x), Some(&s), Some(&b)], 3);
    // Row 0: mean 2, variance 2/3; row 1: mean 4, variance 8/3.
    let i0 = 1.0 / (2.0f64 / 3.0 + 1e-5).sqrt();
    let i1 = 1.0 / (8.0f64 / 3.0 + 1e-5).sqrt();
    close(
        &out[0],
        &[-i0, 0.0, i0 + 1.0, -2.0 * i1, 0.0, 2.0 * i1 + 1.0],
        1e-6,
    );
    close(&out[1], &[2.0, 4.0], 1e-6);
    close(&out[2], &[i0, i1], 1e-5);
}

#[test]
fn group_norm_opset18_scales_per_group() {
    let op = build(
        "GroupNormalization",
        18,
        &[("num_groups", Attribute::Int(2))],
        3,
        1,
    );
    // N=1, C=4, one position: groups {0,1} and {2,3}.
    let x = t(&[1, 4, 1], &[1.0, 3.0, 10.0, 14.0]);
    let (s, b) = (t(&[2], &[2.0, 1.0]), t(&[2], &[0.0, 5.0]));
    let out = run(&op, &[Some(&x), Some(&s), Some(&b)], 1);
    let g0 = 1.0 / (1.0f64 + 1e-5).sqrt();
    let g1 = 2.0 / (4.0f64 + 1e-5).sqrt();
    close(&out[0], &[-2.0 * g0, 2.0 * g0, 5.0 - g1, 5.0 + g1], 1e-6);
}

#[test]
fn l1_norm_uses_absolute_values() {
    let op = build("LpNormalization", 22, &[("p", Attribute::Int(1))], 1, 1);
    let x = t(&[2, 2], &[-1.0, 3.0, 0.0, 0.0]);
    let out = run(&op, &[Some(&x)], 1);
    close(&out[0], &[-0.25, 0.75, 0.0, 0.0], 1e-7);
}

#[test]
fn attention_row_by_hand() {
    let op = build("Attention", 23, &[("scale", Attribute::Float(1.0))], 3, 1);
    let q = t(&[1, 1, 1, 2], &[1.0, 0.0]);
    let k = t(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let v = t(&[1, 1, 2, 1], &[1.0, 3.0]);
    let out = run(&op, &[Some(&q), Some(&k), Some(&v)], 1);
    // Scores [1, 0]: weights e/(e+1) and 1/(e+1).
    let e = std::f64::consts::E;
    close(&out[0], &[(e + 3.0) / (e + 1.0)], 1e-6);
}

#[test]
fn grouped_heads_and_a_fully_masked_row() {
    // Two query heads share one KV head; query row 1 masks every key.
    let op = build(
        "Attention",
        23,
        &[
            ("q_num_heads", Attribute::Int(2)),
            ("kv_num_heads", Attribute::Int(1)),
        ],
        4,
        1,
    );
    let q = t(&[1, 2, 2], &[0.0, 0.0, 0.0, 0.0]);
    let k = t(&[1, 2, 1], &[5.0, -5.0]);
    let v = t(&[1, 2, 1], &[2.0, 4.0]);
    let m = Tensor::from_vec(
        vec![2, 2],
        vec![BoolByte(1), BoolByte(1), BoolByte(0), BoolByte(0)],
    )
    .unwrap();
    let out = run(&op, &[Some(&q), Some(&k), Some(&v), Some(&m)], 1);
    // Zero queries weigh both keys equally (mean 3); the masked row is zero.
    // Y is (batch, sequence, heads * head size).
    close(&out[0], &[3.0, 3.0, 0.0, 0.0], 1e-6);
}

#[test]
fn causal_mask_is_offset_by_the_past() {
    let op = build(
        "Attention",
        23,
        &[
            ("is_causal", Attribute::Int(1)),
            ("scale", Attribute::Float(1.0)),
        ],
        6,
        3,
    );
    // One new query after one cached key: it sees both keys (scores 0 and 0).
    let q = t(&[1, 1, 1, 1], &[0.0]);
    let k = t(&[1, 1, 1, 1], &[1.0]);
    let v = t(&[1, 1, 1, 1], &[10.0]);
    let pk = t(&[1, 1, 1, 1], &[2.0]);
    let pv = t(&[1, 1, 1, 1], &[20.0]);
    let out = run(
        &op,
        &[Some(&q), Some(&k), Some(&v), None, Some(&pk), Some(&pv)],
        3,
    );
    close(&out[0], &[15.0], 1e-6);
    close(&out[1], &[2.0, 1.0], 0.0);
    close(&out[2], &[20.0, 10.0], 0.0);
}

#[test]
fn rotary_rotates_a_pair() {
    let op = build("RotaryEmbedding", 23, &[], 3, 1);
    let (c, s) = (0.6f32, 0.8f32);
    let x = t(&[1, 1, 1, 2], &[1.0, 2.0]);
    let cos = t(&[1, 1, 1], &[c]);
    let sin = t(&[1, 1, 1], &[s]);
    let out = run(&op, &[Some(&x), Some(&cos), Some(&sin)], 1);
    let (c, s) = (c as f64, s as f64);
    close(&out[0], &[c - 2.0 * s, s + 2.0 * c], 1e-6);
}
