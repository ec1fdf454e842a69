//! Spatial operators on images and volumes: ImageDecoder, Resize/Upsample, ConvTranspose, GridSample, AffineGrid, LpPool, MaxUnpool, MaxPool with indices, RoiAlign, MaxRoiPool, Col2Im, DeformConv.

mod col2im;
mod common;
mod conv_transpose;
mod grid;
mod image_decoder;
pub(crate) mod pool;
mod resize;
mod roi_align;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Upsample", 7, resize::build_upsample),
    onnx("Resize", 10, resize::build),
    onnx("ConvTranspose", 1, conv_transpose::build),
    onnx("LpPool", 1, pool::build),
    onnx("GlobalLpPool", 1, pool::build_global_lp),
    onnx("MaxUnpool", 9, pool::build_max_unpool),
    onnx("MaxRoiPool", 1, pool::build_max_roi_pool),
    onnx("RoiAlign", 10, roi_align::build),
    onnx("GridSample", 16, grid::build_grid_sample),
    onnx("AffineGrid", 20, grid::build_affine_grid),
    onnx("Col2Im", 18, col2im::build_col2im),
    onnx("DeformConv", 19, col2im::build_deform_conv),
    onnx("ImageDecoder", 20, image_decoder::build),
];

#[cfg(test)]
mod tests {
    use crate::{Attribute, Attributes, BuildCx};
    use metal_mps_ir::{Op, Out, Tensor};
    use std::collections::HashMap;

    /// Builds `op` at `opset` with `attrs` and runs it on `inputs`.
    fn run(
        op: &str,
        opset: i64,
        attrs: Vec<(&str, Attribute)>,
        inputs: &[Option<&Tensor>],
        n_out: usize,
    ) -> Vec<Tensor> {
        let map: HashMap<String, Attribute> =
            attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let attrs = Attributes::new(map);
        let cx = BuildCx {
            op_type: op,
            domain: "",
            opset,
            attrs: &attrs,
            num_inputs: inputs.len(),
            num_outputs: n_out,
        };
        match crate::build(&cx).unwrap() {
            Op::Dyn(d) => d.eval(inputs, n_out, &mut Out::fresh()).unwrap(),
            other => panic!("{op} built as {other:?}"),
        }
    }

    /// Nearest-neighbour Resize's axis picks (what the GPU gathers) select
    /// what `eval` returns, over coordinate modes, rounding modes, up- and
    /// down-scaling, output sizes and the `axes` attribute; linear modes and
    /// extrapolated crops pick nothing.
    #[test]
    fn nearest_resize_picks_what_eval_picks() {
        let shape = vec![1usize, 2, 5, 7];
        let x = Tensor::from_vec(shape.clone(), (0..70).map(|v| v as f32).collect()).unwrap();
        let f = |v: &[f32]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        let i = |v: &[i64]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        let s = |v: &str| Attribute::String(v.as_bytes().to_vec());
        let up = f(&[1.0, 1.0, 2.0, 1.5]);
        let down = f(&[1.0, 1.0, 0.6, 0.5]);
        let sizes = i(&[1, 2, 3, 10]);
        let sizes_hw = i(&[8, 3]);
        // Attributes, scales, sizes.
        type Case<'a> = (
            Vec<(&'a str, Attribute)>,
            Option<&'a Tensor>,
            Option<&'a Tensor>,
        );
        let cases: Vec<Case> = vec![
            (vec![], Some(&up), None),
            (vec![], Some(&down), None),
            (
                vec![
                    ("coordinate_transformation_mode", s("asymmetric")),
                    ("nearest_mode", s("floor")),
                ],
                Some(&up),
                None,
            ),
            (
                vec![
                    ("coordinate_transformation_mode", s("align_corners")),
                    ("nearest_mode", s("round_prefer_ceil")),
                ],
                None,
                Some(&sizes),
            ),
            (
                vec![
                    ("coordinate_transformation_mode", s("pytorch_half_pixel")),
                    ("nearest_mode", s("ceil")),
                ],
                Some(&down),
                None,
            ),
            (
                vec![("axes", Attribute::Ints(vec![2, -1]))],
                None,
                Some(&sizes_hw),
            ),
        ];
        for (attrs, scales, sizes) in cases {
            let label = format!("{attrs:?}");
            let map: HashMap<String, Attribute> = attrs
                .into_iter()
                .chain([("mode", s("nearest"))])
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let attrs = Attributes::new(map);
            let cx = BuildCx {
                op_type: "Resize",
                domain: "",
                opset: 19,
                attrs: &attrs,
                num_inputs: 4,
                num_outputs: 1,
            };
            let Op::Dyn(op) = crate::build(&cx).unwrap() else {
                panic!("Resize is not a Dyn op");
            };
            let ins = [Some(&x), None, scales, sizes];
            let want = op.eval(&ins, 1, &mut Out::fresh()).unwrap().remove(0);
            let picks = op.axis_picks(&shape, &ins).unwrap();
            let out: Vec<usize> = picks.iter().map(Vec::len).collect();
            assert_eq!(out, want.shape(), "{label}");
            let st = metal_mps_ir::strides(&shape);
            let xs = x.as_slice::<f32>().unwrap();
            let got: Vec<f32> = (0..want.numel())
                .map(|e| {
                    let (mut rem, mut at) = (e, 0);
                    for d in (0..out.len()).rev() {
                        at += picks[d][rem % out[d]] * st[d];
                        rem /= out[d];
                    }
                    xs[at]
                })
                .collect();
            assert_eq!(got, want.as_slice::<f32>().unwrap(), "{label}");
        }
        let linear = Attributes::new(HashMap::from([("mode".to_string(), s("linear"))]));
        let cx = BuildCx {
            op_type: "Resize",
            domain: "",
            opset: 19,
            attrs: &linear,
            num_inputs: 3,
            num_outputs: 1,
        };
        let Op::Dyn(op) = crate::build(&cx).unwrap() else {
            panic!("Resize is not a Dyn op");
        };
        assert!(op
            .axis_picks(&shape, &[Some(&x), None, Some(&up)])
            .is_none());
    }

    #[test]
    fn conv_transpose_1d_stride_overlaps_taps() {
        // x = [1, 2], w = [1, 1, 1], stride 2: [1, 1, 1+2, 2, 2].
        let x = Tensor::from_vec(vec![1, 1, 2], vec![1f32, 2.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 3], vec![1f32, 1.0, 1.0]).unwrap();
        let y = run(
            "ConvTranspose",
            11,
            vec![("strides", Attribute::Ints(vec![2]))],
            &[Some(&x), Some(&w)],
            1,
        );
        assert_eq!(y[0].shape(), &[1, 1, 5]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0, 3.0, 2.0, 2.0]);
    }

    #[test]
    fn max_pool_indices_in_both_storage_orders() {
        // [[1, 5, 2], [4, 3, 6]], 2x2 windows: maxima 5 at (0, 1) and 6 at (1, 2).
        let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![1f32, 5.0, 2.0, 4.0, 3.0, 6.0]).unwrap();
        for (order, want) in [(0, vec![1i64, 5]), (1, vec![2, 5])] {
            let y = run(
                "MaxPool",
                12,
                vec![
                    ("kernel_shape", Attribute::Ints(vec![2, 2])),
                    ("storage_order", Attribute::Int(order)),
                ],
                &[Some(&x)],
                2,
            );
            assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![5.0, 6.0]);
            assert_eq!(y[1].to_vec::<i64>().unwrap(), want);
        }
    }

    #[test]
    fn resize_10_nearest_rounds_up_when_downsampling() {
        // Scale 0.75 of [0, 1, 2, 3]: sources 0, 1.33, 2.67 -> ceil 0, 2, 3.
        let x = Tensor::from_vec(vec![1, 4], vec![0f32, 1.0, 2.0, 3.0]).unwrap();
        let s = Tensor::from_vec(vec![2], vec![1f32, 0.75]).unwrap();
        let y = run("Resize", 10, vec![], &[Some(&x), Some(&s)], 1);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![0.0, 2.0, 3.0]);
    }

    #[test]
    fn max_unpool_rejects_out_of_range_indices() {
        let x = Tensor::from_vec(vec![1, 1, 1, 1], vec![1f32]).unwrap();
        let i = Tensor::from_vec(vec![1, 1, 1, 1], vec![9i64]).unwrap();
        let attrs = Attributes::new(
            [("kernel_shape".to_string(), Attribute::Ints(vec![2, 2]))]
                .into_iter()
                .collect(),
        );
        let cx = BuildCx {
            op_type: "MaxUnpool",
            domain: "",
            opset: 11,
            attrs: &attrs,
            num_inputs: 2,
            num_outputs: 1,
        };
        let Op::Dyn(d) = crate::build(&cx).unwrap() else {
            panic!("MaxUnpool is a Dyn op")
        };
        assert!(d.eval(&[Some(&x), Some(&i)], 1, &mut Out::fresh()).is_err());
    }
}
