//! Shape and layout operators: slicing, expanding, tiling, ranges, padding modes, depth/space rearrangements, triangular masks, one-hot and the like.

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
