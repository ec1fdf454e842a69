use crate::Graph;

/// Removes nodes none of whose outputs reach a graph output, and compacts
/// nothing else (value ids stay stable).
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
}
