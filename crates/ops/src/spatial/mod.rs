//! Spatial operators on images and volumes: Resize/Upsample, ConvTranspose, GridSample, AffineGrid, LpPool, MaxUnpool, MaxPool with indices, RoiAlign, MaxRoiPool, Col2Im, DeformConv.

mod common;
mod resize;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Upsample", 7, resize::build_upsample),
    onnx("Resize", 10, resize::build),
];
