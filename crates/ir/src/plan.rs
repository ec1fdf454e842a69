//! The execution plan: the schedule and a static memory plan.
//!
//! Every intermediate value (neither a graph input, a constant nor a graph
//! output) is assigned a *slot*. Two values share a slot when their lifetimes
//! (from the step that writes them to the last step that reads them) do not
//! overlap, so a plan needs as many buffers as the widest point of the graph,
//! not one per value. Engines keep one buffer per slot and reuse its capacity
//! from run to run; with symbolic dims the sizes are only known at run time,
//! which is why slots rather than fixed byte offsets are planned.

use crate::{checked_bytes, fixed_shape, Graph, ValueId};

/// What happens to a value's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// Fed by the caller.
    Input,
    /// Known at load time.
    Constant,
    /// Returned to the caller.
    Output,
    /// An intermediate living in this slot.
    Slot(usize),
    /// Never written by the plan (an unused optional output, or a dead value).
    Unused,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Node indices of the graph, in execution order.
    pub order: Vec<usize>,
    /// Per value.
    pub home: Vec<Home>,
    pub num_slots: usize,
    /// Per step: intermediates whose last reader is this step (their slot is free after it).
    pub release_after: Vec<Vec<ValueId>>,
    /// Largest byte size per slot when every shape is static; `None` where unknown.
    pub slot_bytes: Vec<Option<usize>>,
}

impl Plan {
    /// Plans a graph whose nodes are in topological order.
    pub fn new(g: &Graph) -> Plan {
        let order: Vec<usize> = (0..g.nodes.len()).collect();
        let mut home = vec![Home::Unused; g.values.len()];
        for &i in &g.inputs {
            home[i] = Home::Input;
        }
        for (v, value) in g.values.iter().enumerate() {
            if value.constant.is_some() {
                home[v] = Home::Constant;
            }
        }
        for &o in &g.outputs {
            if home[o] == Home::Unused {
                home[o] = Home::Output;
            }
        }
        let mut last_use: Vec<Option<usize>> = vec![None; g.values.len()];
        for (step, &n) in order.iter().enumerate() {
            for &i in g.nodes[n].inputs.iter().flatten() {
                last_use[i] = Some(step);
            }
        }
        let mut free: Vec<usize> = Vec::new();
        let mut num_slots = 0;
        let mut slot_bytes: Vec<Option<usize>> = Vec::new();
        let mut release_after = vec![Vec::new(); order.len()];
        for (step, &n) in order.iter().enumerate() {
            for &o in &g.nodes[n].outputs {
                if home[o] != Home::Unused {
                    continue;
                }
                let slot = free.pop().unwrap_or_else(|| {
                    num_slots += 1;
                    slot_bytes.push(Some(0));
                    num_slots - 1
                });
                home[o] = Home::Slot(slot);
                let bytes = value_bytes(g, o);
                slot_bytes[slot] = match (slot_bytes[slot], bytes) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                // A value nobody reads is released right after it is written.
                let last = last_use[o].unwrap_or(step).max(step);
                release_after[last].push(o);
            }
            for &v in &release_after[step] {
                if let Home::Slot(s) = home[v] {
                    free.push(s);
                }
            }
        }
        Plan {
            order,
            home,
            num_slots,
            release_after,
            slot_bytes,
        }
    }

    /// Bytes of all slots when every intermediate shape is static
    /// (`usize::MAX` when they overflow).
    pub fn arena_bytes(&self) -> Option<usize> {
        self.slot_bytes
            .iter()
            .try_fold(0usize, |sum, b| Some(sum.saturating_add((*b)?)))
    }

    /// Bytes of the slots whose size is static (the lower bound of what a run
    /// needs beside the weights), saturating.
    pub fn static_bytes(&self) -> usize {
        self.slot_bytes
            .iter()
            .flatten()
            .fold(0usize, |sum, b| sum.saturating_add(*b))
    }
}

/// The byte size of a value of static shape; `usize::MAX` when it overflows.
fn value_bytes(g: &Graph, v: ValueId) -> Option<usize> {
    let value = &g.values[v];
    if !value.kind.is_tensor() {
        // Sequences and optionals live outside the slots.
        return Some(0);
    }
    let shape = fixed_shape(value.shape.as_deref()?)?;
    Some(checked_bytes(value.dtype?, &shape).unwrap_or(usize::MAX))
}
