//! Reductions, cumulative sums and products, Einsum, Det, LogSoftmax and Hardmax, the loss functions, the training optimizers and the signal operators (DFT, STFT, windows, mel filters).

mod det;
mod einsum;
mod loss;
mod optim;
mod random;
mod reduce;
mod scan;
mod signal;

use crate::{onnx, OpDef};

const fn training(name: &'static str, build: crate::Builder) -> OpDef {
    OpDef {
        domain: "ai.onnx.preview.training",
        name,
        since: 1,
        build,
    }
}

pub(crate) const OPS: &[OpDef] = &[
    onnx("ReduceL1", 1, reduce::build),
    onnx("ReduceL2", 1, reduce::build),
    onnx("ReduceLogSum", 1, reduce::build),
    onnx("ReduceLogSumExp", 1, reduce::build),
    onnx("ReduceProd", 1, reduce::build),
    onnx("ReduceSumSquare", 1, reduce::build),
    onnx("CumSum", 11, scan::build_cum),
    onnx("CumProd", 26, scan::build_cum),
    onnx("LogSoftmax", 1, scan::build_axis_op),
    onnx("Hardmax", 1, scan::build_axis_op),
    onnx("Einsum", 12, einsum::build),
    onnx("Det", 11, det::build),
    onnx("DFT", 17, signal::build_dft),
    onnx("STFT", 17, signal::build_stft),
    onnx("HannWindow", 17, signal::build_window),
    onnx("HammingWindow", 17, signal::build_window),
    onnx("BlackmanWindow", 17, signal::build_window),
    onnx("MelWeightMatrix", 17, signal::build_mel),
    onnx("SoftmaxCrossEntropyLoss", 12, loss::build),
    onnx("NegativeLogLikelihoodLoss", 12, loss::build),
    onnx("Bernoulli", 15, random::build),
    onnx("RandomUniform", 1, random::build),
    onnx("RandomNormal", 1, random::build),
    onnx("RandomUniformLike", 1, random::build),
    onnx("RandomNormalLike", 1, random::build),
    training("Adagrad", optim::build),
    training("Adam", optim::build),
    training("Momentum", optim::build),
];

#[cfg(test)]
mod tests {
    use crate::{Attribute, Attributes, BuildCx};
    use metal_mps_ir::{Op, Out, Tensor};
    use std::collections::HashMap;

    /// Builds `op_type` at `opset` with `attrs` and runs it on `inputs`.
    fn run(
        op_type: &str,
        opset: i64,
        attrs: Vec<(&str, Attribute)>,
        inputs: &[Option<&Tensor>],
        n_out: usize,
    ) -> metal_mps_ir::Result<Vec<Tensor>> {
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
            num_inputs: inputs.len(),
            num_outputs: n_out,
        };
        let Op::Dyn(op) = crate::build(&cx)? else {
            panic!("{op_type} is not a Dyn op");
        };
        op.eval(inputs, n_out, &mut Out::fresh())
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.to_vec::<f32>().unwrap()
    }

    #[test]
    fn empty_reductions_give_identities() {
        let x = Tensor::from_vec(vec![2, 0], Vec::<i32>::new()).unwrap();
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let keep0 = || vec![("keepdims", Attribute::Int(0))];
        let prod = run("ReduceProd", 18, keep0(), &[Some(&x), Some(&axes)], 1).unwrap();
        assert_eq!(prod[0].shape(), &[2]);
        assert_eq!(prod[0].to_vec::<i32>().unwrap(), vec![1, 1]);
        let ss = run("ReduceSumSquare", 18, keep0(), &[Some(&x), Some(&axes)], 1).unwrap();
        assert_eq!(ss[0].to_vec::<i32>().unwrap(), vec![0, 0]);
        let xf = Tensor::from_vec(vec![2, 0], Vec::<f32>::new()).unwrap();
        let lse = run("ReduceLogSumExp", 18, keep0(), &[Some(&xf), Some(&axes)], 1).unwrap();
        assert_eq!(f32s(&lse[0]), vec![f32::NEG_INFINITY; 2]);
    }

    #[test]
    fn reductions_match_hand_values() {
        // Attribute axes before opset 18; integer L2 rounds toward zero.
        let x = Tensor::from_vec(vec![1, 2], vec![3i64, 4]).unwrap();
        let l2 = run(
            "ReduceL2",
            13,
            vec![("axes", Attribute::Ints(vec![-1]))],
            &[Some(&x)],
            1,
        );
        let l2 = l2.unwrap();
        assert_eq!(l2[0].shape(), &[1, 1]);
        assert_eq!(l2[0].to_vec::<i64>().unwrap(), vec![5]);
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let attrs = vec![
            ("axes", Attribute::Ints(vec![1])),
            ("keepdims", Attribute::Int(0)),
        ];
        let y = run("ReduceLogSumExp", 13, attrs, &[Some(&x)], 1).unwrap();
        let want = [
            (1f64.exp() + 2f64.exp()).ln(),
            (3f64.exp() + 4f64.exp()).ln(),
        ];
        for (a, b) in f32s(&y[0]).iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }

    #[test]
    fn cumsum_reverse_exclusive() {
        let x = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        let axis = Tensor::scalar(0i64);
        let attrs = vec![
            ("reverse", Attribute::Int(1)),
            ("exclusive", Attribute::Int(1)),
        ];
        let y = run("CumSum", 14, attrs, &[Some(&x), Some(&axis)], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![5, 3, 0]);
    }

    #[test]
    fn einsum_diagonal_ellipsis_and_implicit_output() {
        let eq = |s: &str| vec![("equation", Attribute::String(s.as_bytes().to_vec()))];
        let m = Tensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let d = run("Einsum", 12, eq("ii->i"), &[Some(&m)], 1).unwrap();
        assert_eq!(f32s(&d[0]), vec![1., 4.]);
        // Implicit output "ik": the matrix product.
        let p = run("Einsum", 12, eq("ij,jk"), &[Some(&m), Some(&m)], 1).unwrap();
        assert_eq!(f32s(&p[0]), vec![7., 10., 15., 22.]);
        // Broadcast batch dims: [2,1,2] x [2,2] -> [2,1,2]... with a leading 1.
        let b = Tensor::from_vec(vec![2, 1, 2], vec![1f32, 0., 0., 1.]).unwrap();
        let y = run(
            "Einsum",
            12,
            eq("...ij,jk->...ik"),
            &[Some(&b), Some(&m)],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[2, 1, 2]);
        assert_eq!(f32s(&y[0]), vec![1., 2., 3., 4.]);
        let v = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
        let w = Tensor::from_vec(vec![3], vec![4i64, 5, 6]).unwrap();
        let s = run("Einsum", 12, eq("i,i"), &[Some(&v), Some(&w)], 1).unwrap();
        assert_eq!(s[0].to_vec::<i64>().unwrap(), vec![32]);
    }

    #[test]
    fn irfft_inverts_rfft() {
        // rfft([1, 2, 3, 4]) = [10, -2+2i, -2].
        let x = Tensor::from_vec(vec![1, 3, 2], vec![10f32, 0., -2., 2., -2., 0.]).unwrap();
        let attrs = vec![
            ("inverse", Attribute::Int(1)),
            ("onesided", Attribute::Int(1)),
        ];
        let axis = Tensor::scalar(1i64);
        let y = run("DFT", 20, attrs, &[Some(&x), None, Some(&axis)], 1).unwrap();
        assert_eq!(y[0].shape(), &[1, 4, 1]);
        for (a, b) in f32s(&y[0]).iter().zip([1., 2., 3., 4.]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn hardmax_before_13_flattens_from_axis() {
        let x = Tensor::from_vec(vec![1, 2, 2], vec![1f32, 3., 2., 0.]).unwrap();
        let y = run("Hardmax", 11, vec![], &[Some(&x)], 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![0., 1., 0., 0.]);
        let y = run(
            "Hardmax",
            13,
            vec![("axis", Attribute::Int(1))],
            &[Some(&x)],
            1,
        )
        .unwrap();
        assert_eq!(f32s(&y[0]), vec![0., 1., 1., 0.]);
    }

    #[test]
    fn nll_mean_skips_ignored_labels() {
        let lp = Tensor::from_vec(vec![2, 2], vec![-1f32, -2., -3., -4.]).unwrap();
        let t = Tensor::from_vec(vec![2], vec![1i64, -1]).unwrap();
        let w = Tensor::from_vec(vec![2], vec![1f32, 2.]).unwrap();
        let attrs = vec![("ignore_index", Attribute::Int(-1))];
        let y = run(
            "NegativeLogLikelihoodLoss",
            13,
            attrs,
            &[Some(&lp), Some(&t), Some(&w)],
            1,
        )
        .unwrap();
        // (2 * 2) / 2.
        assert_eq!(f32s(&y[0]), vec![2.]);
        let bad = Tensor::from_vec(vec![2], vec![1i64, 5]).unwrap();
        let r = run(
            "NegativeLogLikelihoodLoss",
            13,
            vec![],
            &[Some(&lp), Some(&bad)],
            1,
        );
        assert!(r.is_err());
    }
}
