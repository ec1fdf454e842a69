//! Shape and layout operators: slicing, expanding, tiling, ranges, padding modes, depth/space rearrangements, triangular masks, one-hot and the like.

mod cast_like;
mod depth;
mod expand;
mod generate;
mod pad;
mod remap;
mod reverse;
mod slice;
mod trilu;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Slice", 1, slice::build),
    onnx("Expand", 8, expand::build_expand),
    onnx("Tile", 1, expand::build_tile),
    onnx("Range", 11, generate::build_range),
    onnx("ConstantOfShape", 9, generate::build_constant_of_shape),
    onnx("Size", 1, generate::build_size),
    onnx("EyeLike", 9, generate::build_eye_like),
    onnx("CastLike", 15, cast_like::build),
    onnx("Trilu", 14, trilu::build_trilu),
    onnx("OneHot", 9, trilu::build_one_hot),
    onnx("DepthToSpace", 1, depth::build),
    onnx("SpaceToDepth", 1, depth::build),
    onnx("CenterCropPad", 18, pad::build_center_crop_pad),
    onnx("ReverseSequence", 10, reverse::build),
    onnx("Pad", 1, pad::build_pad),
];

#[cfg(test)]
mod tests {
    use crate::{Attribute, Attributes, BuildCx};
    use metal_mps_ir::infer::Known;
    use metal_mps_ir::{DType, Dim, Op, Out, Tensor};
    use std::collections::HashMap;

    fn build(op: &str, opset: i64, attrs: &[(&str, Attribute)], n_in: usize) -> Op {
        let attrs = Attributes::new(
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
        let cx = BuildCx {
            op_type: op,
            domain: "",
            opset,
            attrs: &attrs,
            num_inputs: n_in,
            num_outputs: 1,
        };
        crate::build(&cx).unwrap()
    }

    fn run(op: &Op, inputs: &[Option<&Tensor>]) -> metal_mps_ir::Result<Tensor> {
        let Op::Dyn(d) = op else {
            panic!("not a Dyn op: {op:?}")
        };
        Ok(d.eval(inputs, 1, &mut Out::fresh())?.remove(0))
    }

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn pad_modes_crop_then_pad() {
        // [1,2,3,4] cropped by 1 at the start, padded by 3 at the end:
        // the padding reads the cropped [2,3,4].
        let x = Tensor::from_vec(vec![4], vec![1f32, 2., 3., 4.]).unwrap();
        let p = ints(&[-1, 3]);
        for (mode, want) in [
            ("reflect", [2., 3., 4., 3., 2., 3.]),
            ("edge", [2., 3., 4., 4., 4., 4.]),
            ("wrap", [2., 3., 4., 2., 3., 4.]),
        ] {
            let op = build("Pad", 19, &[("mode", Attribute::String(mode.into()))], 2);
            let y = run(&op, &[Some(&x), Some(&p)]).unwrap();
            assert_eq!(y.to_vec::<f32>().unwrap(), want, "{mode}");
        }
        // Constant mode stays the built-in op.
        assert!(matches!(build("Pad", 19, &[], 2), Op::Pad { .. }));
        // Cropping more than the axis holds is an error.
        let op = build(
            "Pad",
            19,
            &[("mode", Attribute::String(b"edge".to_vec()))],
            2,
        );
        assert!(run(&op, &[Some(&x), Some(&ints(&[-3, -2]))]).is_err());
    }

    #[test]
    fn slice_infers_static_and_symbolic_shapes() {
        let op = build("Slice", 13, &[], 5);
        let Op::Dyn(d) = &op else { panic!() };
        let xs = [Dim::Sym("N".into()), Dim::Fixed(10)];
        let x = Known {
            dtype: DType::F32,
            shape: Some(&xs),
            constant: None,
            kind: &metal_mps_ir::Kind::Tensor,
        };
        fn c(t: &Tensor) -> Known<'_> {
            Known {
                dtype: DType::I64,
                shape: None,
                constant: Some(t),
                kind: &metal_mps_ir::Kind::Tensor,
            }
        }
        // x[:, ::-3] and x[0:INT_MAX] on the symbolic axis.
        let (s, e, a, st) = (
            ints(&[0, -1]),
            ints(&[i64::MAX, i64::MIN]),
            ints(&[0, 1]),
            ints(&[1, -3]),
        );
        let f = d
            .infer(
                &[Some(x), Some(c(&s)), Some(c(&e)), Some(c(&a)), Some(c(&st))],
                1,
            )
            .unwrap();
        assert_eq!(f[0].1, Some(vec![Dim::Sym("N".into()), Dim::Fixed(4)]));
        // Unknown starts: the rank stays, the sliced axes are unknown.
        let x = Known {
            dtype: DType::F32,
            shape: Some(&xs),
            constant: None,
            kind: &metal_mps_ir::Kind::Tensor,
        };
        let s_dyn = Known {
            dtype: DType::I64,
            shape: None,
            constant: None,
            kind: &metal_mps_ir::Kind::Tensor,
        };
        let a1 = ints(&[1]);
        let f = d
            .infer(&[Some(x), Some(s_dyn), Some(c(&e)), Some(c(&a1)), None], 1)
            .unwrap();
        assert_eq!(f[0].1, Some(vec![Dim::Sym("N".into()), Dim::Unknown]));
        // Repeated axes are refused.
        let x = Tensor::from_vec(vec![2, 2], vec![0f32; 4]).unwrap();
        let aa = ints(&[1, -1]);
        let ss = ints(&[0, 0]);
        assert!(run(&op, &[Some(&x), Some(&ss), Some(&ss), Some(&aa)]).is_err());
    }

    #[test]
    fn expand_infers_broadcast_of_unknown_dims() {
        let op = build("Expand", 13, &[], 2);
        let Op::Dyn(d) = &op else { panic!() };
        let xs = [Dim::Sym("N".into()), Dim::Fixed(1)];
        let s = ints(&[2, 1, 4]);
        let f = d
            .infer(
                &[
                    Some(Known {
                        dtype: DType::F16,
                        shape: Some(&xs),
                        constant: None,
                        kind: &metal_mps_ir::Kind::Tensor,
                    }),
                    Some(Known {
                        dtype: DType::I64,
                        shape: None,
                        constant: Some(&s),
                        kind: &metal_mps_ir::Kind::Tensor,
                    }),
                ],
                1,
            )
            .unwrap();
        assert_eq!(
            f[0].1,
            Some(vec![Dim::Fixed(2), Dim::Sym("N".into()), Dim::Fixed(4)])
        );
        // [2,3] cannot be expanded to [4,3].
        let x = Tensor::from_vec(vec![2, 3], vec![0u8; 6]).unwrap();
        assert!(run(&op, &[Some(&x), Some(&ints(&[4, 3]))]).is_err());
    }

    #[test]
    fn tile_1_repeats_one_axis() {
        let op = build("Tile", 1, &[], 3);
        let x = Tensor::from_vec(vec![1, 2], vec![1i32, 2]).unwrap();
        let y = run(
            &op,
            &[
                Some(&x),
                Some(&Tensor::scalar(3i64)),
                Some(&Tensor::scalar(1i64)),
            ],
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 6]);
        assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn range_counts_and_steps() {
        let op = build("Range", 11, &[], 3);
        // The spec's example 2.
        let t = |v: i32| Tensor::scalar(v);
        let y = run(&op, &[Some(&t(10)), Some(&t(4)), Some(&t(-2))]).unwrap();
        assert_eq!(y.to_vec::<i32>().unwrap(), vec![10, 8, 6]);
        // Empty when the step walks away from the limit; delta 0 is an error.
        let y = run(&op, &[Some(&t(1)), Some(&t(5)), Some(&t(-1))]).unwrap();
        assert_eq!(y.shape(), &[0]);
        assert!(run(&op, &[Some(&t(1)), Some(&t(5)), Some(&t(0))]).is_err());
    }

    #[test]
    fn one_hot_wraps_negative_indices_and_drops_out_of_range() {
        let op = build("OneHot", 11, &[("axis", Attribute::Int(0))], 3);
        let idx = Tensor::from_vec(vec![3], vec![-1i64, 5, 1]).unwrap();
        let depth = Tensor::scalar(3i64);
        let vals = Tensor::from_vec(vec![2], vec![0i64, 7]).unwrap();
        let y = run(&op, &[Some(&idx), Some(&depth), Some(&vals)]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        // Column j is index j: -1 -> 2, 5 -> none, 1 -> 1.
        assert_eq!(y.to_vec::<i64>().unwrap(), vec![0, 0, 0, 0, 0, 7, 7, 0, 0]);
    }
}
