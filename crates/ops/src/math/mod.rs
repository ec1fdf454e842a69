//! Reductions, cumulative sums and products, Einsum, Det, LogSoftmax and Hardmax, the loss functions, the training optimizers and the signal operators (DFT, STFT, windows, mel filters).

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
