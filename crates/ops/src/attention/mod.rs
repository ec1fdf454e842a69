//! Transformer operators: Attention, RotaryEmbedding and the other attention variants, and the normalizations (Layer, RMS, Group, Instance, Lp, MeanVariance).

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
