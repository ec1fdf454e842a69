//! Spatial operators on images and volumes: Resize/Upsample, ConvTranspose, GridSample, AffineGrid, LpPool, MaxUnpool, MaxPool with indices, RoiAlign, MaxRoiPool, Col2Im, DeformConv.

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
