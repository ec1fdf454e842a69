use crate::Graph;

/// Removes nodes none of whose outputs reach a graph output, and drops the
/// constants nothing reads any more (weights replaced by folded ones, say), so
/// their memory is freed. Value ids stay stable.
pub fn remove_dead_nodes(g: &mut Graph) {
    let mut live = vec![false; g.values.len()];
    for &o in &g.outputs {
        live[o] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|&o| live[o]) {
            keep[i] = true;
            for &inp in node.inputs.iter().flatten() {
                live[inp] = true;
            }
        }
    }
    let remove: Vec<bool> = keep.iter().map(|k| !k).collect();
    g.remove_nodes(&remove);
    for (v, value) in g.values.iter_mut().enumerate() {
        if !live[v] {
            value.constant = None;
        }
    }
}
