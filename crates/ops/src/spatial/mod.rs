//! Spatial operators on images and volumes: Resize/Upsample, ConvTranspose, GridSample, AffineGrid, LpPool, MaxUnpool, MaxPool with indices, RoiAlign, MaxRoiPool, Col2Im, DeformConv.

mod col2im;
mod common;
mod conv_transpose;
mod grid;
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
];
