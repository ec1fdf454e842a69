//! The static memory plan: slot counts, lifetimes and releases, checked against
//! lifetimes computed here from the graph independently of the planner.

use metal_mps_ir::plan::{Home, Plan};
use metal_mps_ir::{BinaryOp, DType, Dim, Graph, Node, Op, UnaryOp, ValueId};

fn node(g: &mut Graph, op: Op, inputs: &[ValueId], outputs: &[ValueId]) {
    let name = format!("n{}", g.nodes.len());
    let onnx_op = op.name();
    g.nodes.push(Node {
        name,
        op,
        onnx_op,
        opset: 13,
        inputs: inputs.iter().map(|&v| Some(v)).collect(),
        outputs: outputs.to_vec(),
    });
}

fn relu(g: &mut Graph, x: ValueId, name: &str) -> ValueId {
    let y = g.add_value(name);
    node(g, Op::Unary(UnaryOp::Relu), &[x], &[y]);
    y
}

fn add(g: &mut Graph, a: ValueId, b: ValueId, name: &str) -> ValueId {
    let y = g.add_value(name);
    node(g, Op::Binary(BinaryOp::Add), &[a, b], &[y]);
    y
}

fn input(g: &mut Graph, name: &str) -> ValueId {
    let x = g.add_value(name);
    g.values[x].dtype = Some(DType::F32);
    g.values[x].shape = Some(vec![Dim::Fixed(2), Dim::Fixed(3)]);
    g.inputs.push(x);
    x
}

/// Every value gets the static shape [2, 3] FLOAT (24 bytes).
fn type_all(g: &mut Graph) {
    for v in &mut g.values {
        v.dtype = Some(DType::F32);
        v.shape = Some(vec![Dim::Fixed(2), Dim::Fixed(3)]);
    }
}

/// Lifetime `[defined, last read]` of each intermediate in plan steps, computed
/// from the graph and the plan's order (a value nobody reads dies where it is born).
fn lifetimes(g: &Graph, plan: &Plan) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; g.values.len()];
    for (step, &n) in plan.order.iter().enumerate() {
        for &o in &g.nodes[n].outputs {
            life[o] = Some((step, step));
        }
    }
    for (step, &n) in plan.order.iter().enumerate() {
        for &i in g.nodes[n].inputs.iter().flatten() {
            if let Some((def, last)) = &mut life[i] {
                assert!(
                    *def < step,
                    "value {i} is read at step {step} before it is written at step {def}"
                );
                *last = (*last).max(step);
            }
        }
    }
    life
}

/// The invariants of a plan, whatever the graph:
/// - inputs, constants and outputs have their own homes, every other node output a slot;
/// - two intermediates sharing a slot are never alive at the same step
///   (a slot written by a step is not one that step reads);
/// - each intermediate is released exactly once, after its last reader (or
///   right after it is written when nobody reads it);
/// - `num_slots` is the number of distinct slots used.
fn check_plan(g: &Graph, plan: &Plan) {
    assert_eq!(plan.home.len(), g.values.len());
    assert_eq!(plan.release_after.len(), plan.order.len());
    let mut sorted = plan.order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..g.nodes.len()).collect::<Vec<_>>(),
        "order is a permutation of the nodes"
    );

    for &i in &g.inputs {
        assert_eq!(plan.home[i], Home::Input, "input {}", g.values[i].name);
    }
    for (v, value) in g.values.iter().enumerate() {
        if value.constant.is_some() {
            assert_eq!(plan.home[v], Home::Constant, "constant {}", value.name);
        }
    }
    for &o in &g.outputs {
        if !g.inputs.contains(&o) && g.values[o].constant.is_none() {
            assert_eq!(plan.home[o], Home::Output, "output {}", g.values[o].name);
        }
    }

    let life = lifetimes(g, plan);
    let mut slotted: Vec<(ValueId, usize, (usize, usize))> = Vec::new();
    for (v, home) in plan.home.iter().enumerate() {
        if let Home::Slot(s) = *home {
            assert!(
                s < plan.num_slots,
                "slot {s} of value {v} is out of range ({} slots)",
                plan.num_slots
            );
            let l = life[v].unwrap_or_else(|| panic!("value {v} has a slot but no node writes it"));
            slotted.push((v, s, l));
        }
    }
    // Every node output that is not an input/constant/output is in a slot.
    for n in &g.nodes {
        for &o in &n.outputs {
            if !g.outputs.contains(&o) {
                assert!(
                    matches!(plan.home[o], Home::Slot(_)),
                    "intermediate {} has home {:?}",
                    g.values[o].name,
                    plan.home[o]
                );
            }
        }
    }
    for (i, &(a, sa, (da, la))) in slotted.iter().enumerate() {
        for &(b, sb, (db, lb)) in &slotted[i + 1..] {
            if sa == sb {
                let disjoint = la < db || lb < da;
                assert!(
                    disjoint,
                    "'{}' (steps {da}..={la}) and '{}' (steps {db}..={lb}) are alive together but share slot {sa}",
                    g.values[a].name, g.values[b].name
                );
            }
        }
    }
    let used: std::collections::BTreeSet<usize> = slotted.iter().map(|s| s.1).collect();
    assert_eq!(used.len(), plan.num_slots, "every slot is used");

    // Releases: exactly the slotted values, each once, at its last use.
    let mut released = vec![0usize; g.values.len()];
    for (step, vs) in plan.release_after.iter().enumerate() {
        for &v in vs {
            released[v] += 1;
            let (_, last) = life[v].expect("released values are written");
            assert_eq!(
                step, last,
                "'{}' is released after step {step}, its last use is step {last}",
                g.values[v].name
            );
        }
    }
    for &(v, _, _) in &slotted {
        assert_eq!(
            released[v], 1,
            "'{}' is released {} times",
            g.values[v].name, released[v]
        );
    }
    for (v, &count) in released.iter().enumerate() {
        if count > 0 {
            assert!(
                matches!(plan.home[v], Home::Slot(_)),
                "'{}' is released but has no slot",
                g.values[v].name
            );
        }
    }
    if let Some(arena) = plan.arena_bytes() {
        assert_eq!(
            arena,
            plan.slot_bytes.iter().map(|b| b.unwrap()).sum::<usize>()
        );
    }
}

#[test]
fn chain_of_ten_relus_needs_at_most_two_slots() {
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    let mut v = x;
    for i in 0..10 {
        v = relu(&mut g, v, &format!("r{i}"));
    }
    g.outputs.push(v);
    type_all(&mut g);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);
    assert!(
        plan.num_slots <= 2,
        "a chain needs 2 slots, the plan has {}",
        plan.num_slots
    );
    // 9 intermediates, the last Relu writes the output.
    let slots = plan
        .home
        .iter()
        .filter(|h| matches!(h, Home::Slot(_)))
        .count();
    assert_eq!(slots, 9);
    assert_eq!(plan.home[v], Home::Output);
    assert_eq!(plan.home[x], Home::Input);
    // Static shapes: every slot holds one [2, 3] FLOAT tensor.
    assert!(
        plan.slot_bytes.iter().all(|&b| b == Some(24)),
        "{:?}",
        plan.slot_bytes
    );
    assert_eq!(plan.arena_bytes(), Some(24 * plan.num_slots));
}

#[test]
fn symbolic_shapes_leave_slot_sizes_unknown() {
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    let a = relu(&mut g, x, "a");
    let b = relu(&mut g, a, "b");
    g.outputs.push(b);
    g.values[a].dtype = Some(DType::F32);
    g.values[a].shape = Some(vec![Dim::Sym("batch".into()), Dim::Fixed(3)]);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);
    assert_eq!(plan.num_slots, 1);
    assert_eq!(plan.slot_bytes, vec![None]);
    assert_eq!(plan.arena_bytes(), None);
}

#[test]
fn diamond_keeps_a_value_alive_until_its_last_reader() {
    //        ┌─> b -> c -> d ─┐
    //  x -> a                 add -> e -> out
    //        └────────────────┘
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    let a = relu(&mut g, x, "a");
    let b = relu(&mut g, a, "b");
    let c = relu(&mut g, b, "c");
    let d = relu(&mut g, c, "d");
    let e = add(&mut g, a, d, "e");
    let out = relu(&mut g, e, "out");
    g.outputs.push(out);
    type_all(&mut g);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);

    let slot = |v: ValueId| match plan.home[v] {
        Home::Slot(s) => s,
        other => panic!("'{}' has home {other:?}", g.values[v].name),
    };
    // `a` is read at step 4 (the Add): nothing written in steps 1..=4 may take its slot.
    for v in [b, c, d, e] {
        assert_ne!(
            slot(a),
            slot(v),
            "'{}' overwrote 'a' before its last reader",
            g.values[v].name
        );
    }
    assert!(
        plan.release_after[4].contains(&a),
        "'a' is released after the Add: {:?}",
        plan.release_after
    );
    for step in 0..4 {
        assert!(
            !plan.release_after[step].contains(&a),
            "'a' released early, after step {step}"
        );
    }
    // The widest point holds `a` and one chain value, plus the one being written.
    assert!(plan.num_slots <= 3, "{} slots", plan.num_slots);
}

#[test]
fn wide_fan_out_of_one_value() {
    // a is read by five nodes spread over the schedule; every branch is summed at the end.
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    let a = relu(&mut g, x, "a");
    let mut acc = relu(&mut g, a, "b0");
    for i in 1..5 {
        let bi = relu(&mut g, a, &format!("b{i}"));
        acc = add(&mut g, acc, bi, &format!("s{i}"));
    }
    g.outputs.push(acc);
    type_all(&mut g);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);
    let last_reader = plan
        .order
        .iter()
        .rposition(|&n| g.nodes[n].inputs.contains(&Some(a)))
        .unwrap();
    assert!(plan.release_after[last_reader].contains(&a));
}

#[test]
fn values_never_read_are_released_where_they_are_written() {
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    // Step 0 writes a value nobody reads (not a graph output either).
    let dead = relu(&mut g, x, "dead");
    let b = relu(&mut g, x, "b");
    let c = relu(&mut g, b, "c");
    // A two-output node whose second output is never read.
    let s0 = g.add_value("s0");
    let s1 = g.add_value("s1");
    node(
        &mut g,
        Op::Split {
            axis: 0,
            sizes: None,
            num_outputs: 2,
        },
        &[c],
        &[s0, s1],
    );
    let out = add(&mut g, s0, s0, "out");
    g.outputs.push(out);
    type_all(&mut g);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);

    assert!(matches!(plan.home[dead], Home::Slot(_)));
    assert!(
        plan.release_after[0].contains(&dead),
        "{:?}",
        plan.release_after
    );
    assert!(
        plan.release_after[3].contains(&s1),
        "{:?}",
        plan.release_after
    );
    // The dead value's slot is free again for `b`, so the chain still fits in 2
    // slots; the Split's two outputs are alive with `c` at step 3 (3 slots).
    assert!(plan.num_slots <= 3, "{} slots", plan.num_slots);
    let Home::Slot(sd) = plan.home[dead] else {
        unreachable!()
    };
    let Home::Slot(sb) = plan.home[b] else {
        unreachable!()
    };
    assert_eq!(
        sd, sb,
        "the slot of a dead value is reused by the next step"
    );
}

#[test]
fn inputs_constants_and_outputs_take_no_slots() {
    let mut g = Graph::default();
    let x = input(&mut g, "x");
    let w = g.add_constant(
        "w",
        metal_mps_ir::Tensor::from_vec(vec![2, 3], vec![1f32; 6]).unwrap(),
    );
    let y = add(&mut g, x, w, "y");
    g.outputs.push(y);
    // An output that is also read by a later node stays an output.
    let z = relu(&mut g, y, "z");
    g.outputs.push(z);
    type_all(&mut g);
    let plan = Plan::new(&g);
    check_plan(&g, &plan);
    assert_eq!(plan.num_slots, 0);
    assert_eq!(plan.home[x], Home::Input);
    assert_eq!(plan.home[w], Home::Constant);
    assert_eq!(plan.home[y], Home::Output);
    assert_eq!(plan.home[z], Home::Output);
    assert!(plan.release_after.iter().all(Vec::is_empty));
    assert_eq!(plan.arena_bytes(), Some(0));
}

#[test]
fn random_dags_satisfy_the_plan_invariants() {
    // Deterministic pseudo-random DAGs: each node reads one or two earlier values.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut rand = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..200 {
        let mut g = Graph::default();
        let mut vals = vec![input(&mut g, "x"), input(&mut g, "y")];
        let nodes = 1 + rand(25);
        for i in 0..nodes {
            let a = vals[rand(vals.len())];
            let v = if rand(2) == 0 {
                relu(&mut g, a, &format!("v{i}"))
            } else {
                let b = vals[rand(vals.len())];
                add(&mut g, a, b, &format!("v{i}"))
            };
            vals.push(v);
        }
        // One or two outputs, the last value always among them.
        g.outputs.push(*vals.last().unwrap());
        let extra = vals[2 + rand(vals.len() - 2)];
        if !g.outputs.contains(&extra) {
            g.outputs.push(extra);
        }
        type_all(&mut g);
        let plan = Plan::new(&g);
        check_plan(&g, &plan);
        // Never more slots than intermediates.
        let intermediates = plan
            .home
            .iter()
            .filter(|h| matches!(h, Home::Slot(_)))
            .count();
        assert!(plan.num_slots <= intermediates);
    }
}
