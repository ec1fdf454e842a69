//! Indexing and selection: gathers and scatters, NonZero, Compress, Unique, TopK, ArgMax/ArgMin, NonMaxSuppression; and the ai.onnx.ml operators.

mod gather;
mod ml;
mod nms;
mod scatter;
mod select;
#[cfg(test)]
mod tests;
mod topk;
mod util;

use crate::{ml as ml_row, onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("GatherElements", 11, gather::build_gather_elements),
    onnx("GatherND", 11, gather::build_gather_nd),
    onnx("Scatter", 9, scatter::build_scatter_elements),
    onnx("ScatterElements", 11, scatter::build_scatter_elements),
    onnx("ScatterND", 11, scatter::build_scatter_nd),
    onnx("TensorScatter", 24, scatter::build_tensor_scatter),
    onnx("NonZero", 9, select::build_nonzero),
    onnx("Compress", 9, select::build_compress),
    onnx("Unique", 11, select::build_unique),
    onnx("TopK", 1, topk::build_topk),
    onnx("ArgMax", 1, topk::build_arg),
    onnx("ArgMin", 1, topk::build_arg),
    onnx("NonMaxSuppression", 10, nms::build_nms),
    ml_row("TreeEnsembleRegressor", 1, ml::tree::build_regressor),
    ml_row("TreeEnsembleClassifier", 1, ml::tree::build_classifier),
    ml_row("TreeEnsemble", 5, ml::tree::build_tree_ensemble),
    ml_row("LinearRegressor", 1, ml::linear::build_regressor),
    ml_row("LinearClassifier", 1, ml::linear::build_classifier),
    ml_row("Binarizer", 1, ml::simple::build_binarizer),
    ml_row("Scaler", 1, ml::simple::build_scaler),
    ml_row("Normalizer", 1, ml::simple::build_normalizer),
    ml_row("Imputer", 1, ml::simple::build_imputer),
    ml_row("OneHotEncoder", 1, ml::simple::build_one_hot),
    ml_row(
        "ArrayFeatureExtractor",
        1,
        ml::simple::build_array_feature_extractor,
    ),
    ml_row("FeatureVectorizer", 1, ml::simple::build_feature_vectorizer),
    ml_row("LabelEncoder", 2, ml::encode::build_label_encoder),
    ml_row("CategoryMapper", 1, ml::encode::build_category_mapper),
];
