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
