//! Indexing and selection: gathers and scatters, NonZero, Compress, Unique, TopK, ArgMax/ArgMin, NonMaxSuppression; and the ai.onnx.ml operators.

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
