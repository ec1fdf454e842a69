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
