//! Graph rewrites, run in order by [`optimize`].
//!
//! Each pass is a function `Graph -> Graph` with one job. Constant folding
//! evaluates nodes through an [`Evaluator`] (the CPU engine), so the IR does not
//! depend on any engine.

mod dce;
mod fold;
mod fuse;
mod gelu;
mod simplify;

pub use dce::remove_dead_nodes;
pub use fold::{fold_constants, Evaluator, FOLD_BUDGET_BYTES};
pub use fuse::{
    fold_batch_norm_into_conv, fuse_activations, fuse_bias_add, fuse_matmul_bias, fuse_max_pool,
    fuse_residual_add,
};
pub use gelu::fuse_gelu;
pub use simplify::{clip_bounds, constant_clip_bounds, remove_identities, replace_nan_guards};

use crate::{Graph, Result};

/// The default pipeline: fold, simplify, fuse, then drop what became dead.
pub fn optimize(g: &mut Graph, eval: &dyn Evaluator) -> Result<()> {
    fold_constants(g, eval)?;
    remove_identities(g);
    constant_clip_bounds(g);
    replace_nan_guards(g);
    fuse_gelu(g);
    fold_batch_norm_into_conv(g)?;
    fuse_bias_add(g)?;
    fuse_activations(g);
    remove_dead_nodes(g);
    Ok(())
}
