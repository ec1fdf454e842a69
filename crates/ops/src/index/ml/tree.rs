//! Tree ensembles: TreeEnsembleRegressor, TreeEnsembleClassifier (opset 1-5,
//! deprecated) and TreeEnsemble (ai.onnx.ml opset 5).

use super::{
    check_numeric, floats_or_tensor, required, rows_features, tensor_f64, values, write_scores,
    Labels, PostTransform,
};
use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Copy, Debug)]
enum Next {
    Node(usize),
    Leaf(usize),
}

#[derive(Debug)]
struct Branch {
    feature: usize,
    mode: Mode,
    split: f64,
    members: Vec<f64>,
    missing_true: bool,
    t: Next,
    f: Next,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

/// Trees as branches and leaves (each leaf a list of `(target, weight)` votes).
#[derive(Debug)]
struct Ensemble {
    branches: Vec<Branch>,
    leaves: Vec<Vec<(usize, f64)>>,
    roots: Vec<Next>,
    n_targets: usize,
    aggregate: Aggregate,
    base: Vec<f64>,
}

impl Branch {
    fn goes_true(&self, x: f64) -> bool {
        if x.is_nan() && self.missing_true {
            return true;
        }
        match self.mode {
            Mode::Leq => x <= self.split,
            Mode::Lt => x < self.split,
            Mode::Gte => x >= self.split,
            Mode::Gt => x > self.split,
            Mode::Eq => x == self.split,
            Mode::Neq => x != self.split,
            Mode::Member => self.members.contains(&x),
        }
    }
}

impl Ensemble {
    fn check(&self, op: &str) -> Result<()> {
        let nb = self.branches.len();
        let nl = self.leaves.len();
        let ok = |n: &Next| match *n {
            Next::Node(i) => i < nb,
            Next::Leaf(i) => i < nl,
        };
        if !self.roots.iter().all(ok) || !self.branches.iter().all(|b| ok(&b.t) && ok(&b.f)) {
            return metal_mps_ir::invalid!("{op}: a tree refers to a node that does not exist");
        }
        if self
            .leaves
            .iter()
            .flatten()
            .any(|&(t, _)| t >= self.n_targets)
        {
            return metal_mps_ir::invalid!("{op}: a leaf votes for a target >= {}", self.n_targets);
        }
        // One row's scores are kept per target: a declared count beyond the
        // tensor cap is refused here, not met as a failed allocation later.
        metal_mps_ir::limits::check_tensor_bytes(self.n_targets.saturating_mul(16)).map_err(
            |_| {
                metal_mps_ir::Error::TooLarge(format!(
                    "{op}: n_targets = {}: the scores of one row exceed the limit per tensor \
                 (METAL_MPS_MAX_TENSOR_BYTES)",
                    self.n_targets
                ))
            },
        )?;
        Ok(())
    }

    /// The aggregated score (and whether any tree voted) of every target for one row.
    fn row(&self, op: &str, x: &[f64]) -> Result<Vec<(f64, bool)>> {
        let mut s = vec![(0.0f64, false); self.n_targets];
        for root in &self.roots {
            let mut at = *root;
            let mut steps = 0usize;
            let leaf = loop {
                match at {
                    Next::Leaf(l) => break l,
                    Next::Node(b) => {
                        let br = &self.branches[b];
                        let Some(&v) = x.get(br.feature) else {
                            return metal_mps_ir::invalid!(
                                "{op}: feature {} is out of range for {} features",
                                br.feature,
                                x.len()
                            );
                        };
                        at = if br.goes_true(v) { br.t } else { br.f };
                        steps += 1;
                        if steps > self.branches.len() {
                            return metal_mps_ir::invalid!("{op}: a tree has a cycle");
                        }
                    }
                }
            };
            for &(t, w) in &self.leaves[leaf] {
                let (sc, has) = &mut s[t];
                *sc = match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => *sc + w,
                    Aggregate::Min if *has => sc.min(w),
                    Aggregate::Max if *has => sc.max(w),
                    _ => w,
                };
                *has = true;
            }
        }
        if self.aggregate == Aggregate::Average && !self.roots.is_empty() {
            let n = self.roots.len() as f64;
            s.iter_mut().for_each(|(v, _)| *v /= n);
        }
        Ok(s)
    }
}

/// Branches, leaves and roots of an ensemble.
type Parts = (Vec<Branch>, Vec<Vec<(usize, f64)>>, Vec<Next>);

/// Builds an ensemble from the `nodes_*` tuples of the deprecated operators,
/// whose leaves are nodes of mode LEAF; `votes` are `(treeid, nodeid, target, weight)`.
fn legacy(op: &str, a: &crate::Attributes, votes: Vec<(i64, i64, i64, f64)>) -> Result<Parts> {
    let ints = |n: &str| -> Result<Vec<i64>> { Ok(a.ints(n)?.unwrap_or_default()) };
    let tree = ints("nodes_treeids")?;
    let node = ints("nodes_nodeids")?;
    let feat = ints("nodes_featureids")?;
    let tid = ints("nodes_truenodeids")?;
    let fid = ints("nodes_falsenodeids")?;
    let miss = ints("nodes_missing_value_tracks_true")?;
    let modes = a.strings("nodes_modes")?.unwrap_or_default();
    let vals = floats_or_tensor(a, "nodes_values")?.unwrap_or_default();
    let n = tree.len();
    if [node.len(), feat.len(), modes.len()]
        .iter()
        .any(|&l| l != n)
        || (!vals.is_empty() && vals.len() != n)
        || (!miss.is_empty() && miss.len() != n)
    {
        return metal_mps_ir::invalid!("{op}: the nodes_* attributes differ in length");
    }
    let mut index: HashMap<(i64, i64), usize> = HashMap::new();
    for i in 0..n {
        if index.insert((tree[i], node[i]), i).is_some() {
            return metal_mps_ir::invalid!("{op}: node ({}, {}) appears twice", tree[i], node[i]);
        }
    }
    let mode_of = |s: &str| -> Result<Option<Mode>> {
        Ok(Some(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => return Ok(None),
            o => return metal_mps_ir::invalid!("{op}: unknown node mode '{o}'"),
        }))
    };
    // Branch and leaf numbers of each node.
    let mut slot = vec![Next::Leaf(0); n];
    let (mut nb, mut nl) = (0, 0);
    let mut parsed = Vec::with_capacity(n);
    for i in 0..n {
        let m = mode_of(&modes[i])?;
        slot[i] = match m {
            Some(_) => {
                nb += 1;
                Next::Node(nb - 1)
            }
            None => {
                nl += 1;
                Next::Leaf(nl - 1)
            }
        };
        parsed.push(m);
    }
    let child = |i: usize, id: i64| -> Result<Next> {
        index
            .get(&(tree[i], id))
            .map(|&j| slot[j])
            .ok_or_else(|| Error::Invalid(format!("{op}: node ({}, {id}) does not exist", tree[i])))
    };
    let mut branches = Vec::with_capacity(nb);
    let mut has_parent = vec![false; n];
    for i in 0..n {
        if let Some(mode) = parsed[i] {
            let (t, f) = (
                tid.get(i).copied().unwrap_or(-1),
                fid.get(i).copied().unwrap_or(-1),
            );
            for id in [t, f] {
                if let Some(&j) = index.get(&(tree[i], id)) {
                    has_parent[j] = true;
                }
            }
            branches.push(Branch {
                feature: usize::try_from(feat[i])
                    .map_err(|_| Error::Invalid(format!("{op}: negative feature id")))?,
                mode,
                split: vals.get(i).copied().unwrap_or(0.0),
                members: vec![],
                missing_true: miss.get(i).is_some_and(|&m| m != 0),
                t: child(i, t)?,
                f: child(i, f)?,
            });
        }
    }
    let mut leaves = vec![Vec::new(); nl];
    for (t, nid, target, w) in votes {
        let Some(&j) = index.get(&(t, nid)) else {
            return metal_mps_ir::invalid!(
                "{op}: a weight refers to node ({t}, {nid}), which does not exist"
            );
        };
        let Next::Leaf(l) = slot[j] else {
            return metal_mps_ir::invalid!(
                "{op}: a weight refers to node ({t}, {nid}), which is not a leaf"
            );
        };
        let target = usize::try_from(target)
            .map_err(|_| Error::Invalid(format!("{op}: negative target id {target}")))?;
        leaves[l].push((target, w));
    }
    // Roots: the first node of each tree without a parent.
    let mut roots = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        if !has_parent[i] && seen.insert(tree[i]) {
            roots.push(slot[i]);
        }
    }
    Ok((branches, leaves, roots))
}

fn votes(
    op: &str,
    a: &crate::Attributes,
    prefix: &str,
    ids: &str,
) -> Result<Vec<(i64, i64, i64, f64)>> {
    let ints = |n: &str| -> Result<Vec<i64>> { Ok(a.ints(n)?.unwrap_or_default()) };
    let t = ints(&format!("{prefix}_treeids"))?;
    let n = ints(&format!("{prefix}_nodeids"))?;
    let c = ints(&format!("{prefix}_{ids}"))?;
    let w = floats_or_tensor(a, &format!("{prefix}_weights"))?.unwrap_or_default();
    if n.len() != t.len() || c.len() != t.len() || w.len() != t.len() {
        return metal_mps_ir::invalid!("{op}: the {prefix}_* attributes differ in length");
    }
    Ok((0..t.len()).map(|i| (t[i], n[i], c[i], w[i])).collect())
}

fn aggregate_of(op: &str, s: &str) -> Result<Aggregate> {
    Ok(match s {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        o => return metal_mps_ir::invalid!("{op}: unknown aggregate_function '{o}'"),
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Output {
    /// TreeEnsembleRegressor: FLOAT scores.
    Regressor,
    /// TreeEnsemble: scores of the input's type.
    Generic,
    /// TreeEnsembleClassifier: labels and FLOAT scores.
    Classifier,
}

#[derive(Debug)]
struct Trees {
    name: &'static str,
    e: Ensemble,
    post: PostTransform,
    output: Output,
    /// The classifier's label ids ([`Labels::ids`]); empty for regressors.
    labels: Vec<i64>,
    /// The classifier's labels as output.
    label_out: Labels,
    binary_case: bool,
    all_positive: bool,
}

pub fn build_regressor(cx: &BuildCx) -> Result<Op> {
    let op = "TreeEnsembleRegressor";
    let a = cx.attrs;
    let v = votes(op, a, "target", "ids")?;
    let (branches, leaves, roots) = legacy(op, a, v)?;
    let e = Ensemble {
        branches,
        leaves,
        roots,
        n_targets: required(op, "n_targets", a.opt_int("n_targets")?)?.max(0) as usize,
        aggregate: aggregate_of(op, &a.str_or("aggregate_function", "SUM")?)?,
        base: floats_or_tensor(a, "base_values")?.unwrap_or_default(),
    };
    e.check(op)?;
    Ok(Op::Dyn(DynOp::new(Trees {
        name: op,
        e,
        post: PostTransform::parse(op, &a.str_or("post_transform", "NONE")?)?,
        output: Output::Regressor,
        labels: vec![],
        label_out: Labels::Ints(vec![]),
        binary_case: false,
        all_positive: false,
    })))
}

pub fn build_classifier(cx: &BuildCx) -> Result<Op> {
    let op = "TreeEnsembleClassifier";
    let a = cx.attrs;
    let label_out = required(
        op,
        "classlabels_int64s",
        Labels::read(op, a, "classlabels_int64s", "classlabels_strings")?,
    )?;
    let labels = label_out.ids();
    let v = votes(op, a, "class", "ids")?;
    let classes: std::collections::HashSet<i64> = v.iter().map(|x| x.2).collect();
    let all_positive = v.iter().all(|x| x.3 >= 0.0);
    let (branches, leaves, roots) = legacy(op, a, v)?;
    let e = Ensemble {
        branches,
        leaves,
        roots,
        n_targets: labels.len(),
        aggregate: Aggregate::Sum,
        base: floats_or_tensor(a, "base_values")?.unwrap_or_default(),
    };
    e.check(op)?;
    if labels.len() < 2 {
        return metal_mps_ir::unsupported!("{op} with fewer than two class labels");
    }
    Ok(Op::Dyn(DynOp::new(Trees {
        name: op,
        binary_case: labels.len() == 2 && classes.len() == 1,
        e,
        post: PostTransform::parse(op, &a.str_or("post_transform", "NONE")?)?,
        output: Output::Classifier,
        labels,
        label_out,
        all_positive,
    })))
}

pub fn build_tree_ensemble(cx: &BuildCx) -> Result<Op> {
    let op = "TreeEnsemble";
    let a = cx.attrs;
    let ints = |n: &str| -> Result<Vec<i64>> { Ok(a.ints(n)?.unwrap_or_default()) };
    let feat = ints("nodes_featureids")?;
    let tid = ints("nodes_truenodeids")?;
    let fid = ints("nodes_falsenodeids")?;
    let tleaf = ints("nodes_trueleafs")?;
    let fleaf = ints("nodes_falseleafs")?;
    let miss = ints("nodes_missing_value_tracks_true")?;
    let modes = a
        .tensor("nodes_modes")?
        .map(|t| t.to_i64_vec())
        .transpose()?
        .unwrap_or_default();
    let splits = tensor_f64(a, "nodes_splits")?.unwrap_or_default();
    let members = tensor_f64(a, "membership_values")?.unwrap_or_default();
    let targets = ints("leaf_targetids")?;
    let weights = tensor_f64(a, "leaf_weights")?.unwrap_or_default();
    let n = feat.len();
    if [
        tid.len(),
        fid.len(),
        tleaf.len(),
        fleaf.len(),
        modes.len(),
        splits.len(),
    ]
    .iter()
    .any(|&l| l != n)
        || (!miss.is_empty() && miss.len() != n)
        || targets.len() != weights.len()
    {
        return metal_mps_ir::invalid!("{op}: the nodes_* or leaf_* attributes differ in length");
    }
    let next = |id: i64, leaf: i64| -> Result<Next> {
        let i = usize::try_from(id)
            .map_err(|_| Error::Invalid(format!("{op}: negative node id {id}")))?;
        Ok(if leaf != 0 {
            Next::Leaf(i)
        } else {
            Next::Node(i)
        })
    };
    let mut member_sets = members.split(|v| v.is_nan());
    let mut branches = Vec::with_capacity(n);
    for i in 0..n {
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            m => return metal_mps_ir::invalid!("{op}: unknown node mode {m}"),
        };
        let set = if mode == Mode::Member {
            member_sets
                .next()
                .ok_or_else(|| Error::Invalid(format!("{op}: membership_values has too few sets")))?
                .to_vec()
        } else {
            vec![]
        };
        branches.push(Branch {
            feature: usize::try_from(feat[i])
                .map_err(|_| Error::Invalid(format!("{op}: negative feature id")))?,
            mode,
            split: splits[i],
            members: set,
            missing_true: miss.get(i).is_some_and(|&m| m != 0),
            t: next(tid[i], tleaf[i])?,
            f: next(fid[i], fleaf[i])?,
        });
    }
    let mut leaves = Vec::with_capacity(targets.len());
    for (&t, &w) in targets.iter().zip(&weights) {
        let t =
            usize::try_from(t).map_err(|_| Error::Invalid(format!("{op}: negative target id")))?;
        leaves.push(vec![(t, w)]);
    }
    let mut roots = Vec::new();
    for r in ints("tree_roots")? {
        let i =
            usize::try_from(r).map_err(|_| Error::Invalid(format!("{op}: negative root {r}")))?;
        let Some(b) = branches.get(i) else {
            return metal_mps_ir::invalid!("{op}: tree root {i} does not exist");
        };
        // A tree that is one leaf: both branches to the same leaf.
        let single = tleaf[i] != 0 && fleaf[i] != 0 && tid[i] == fid[i];
        roots.push(if single { b.t } else { Next::Node(i) });
    }
    let aggregate = match a.int("aggregate_function", 1)? {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        o => return metal_mps_ir::invalid!("{op}: unknown aggregate_function {o}"),
    };
    let e = Ensemble {
        branches,
        leaves,
        roots,
        n_targets: required(op, "n_targets", a.opt_int("n_targets")?)?.max(0) as usize,
        aggregate,
        base: vec![],
    };
    e.check(op)?;
    Ok(Op::Dyn(DynOp::new(Trees {
        name: op,
        e,
        post: PostTransform::from_int(op, a.int("post_transform", 0)?)?,
        output: Output::Generic,
        labels: vec![],
        label_out: Labels::Ints(vec![]),
        binary_case: false,
        all_positive: false,
    })))
}

impl Trees {
    /// onnxruntime's `_set_score_binary`: the label and the second-class mode.
    fn binary_label(&self, s0: (f64, bool), s1: (f64, bool), add: &mut i32) -> i64 {
        let pos = if s1.1 {
            s1.0
        } else if s0.1 {
            s0.0
        } else {
            0.0
        };
        if self.binary_case {
            if self.all_positive {
                *add = if pos > 0.5 { 0 } else { 1 };
                return if pos > 0.5 {
                    self.labels[1]
                } else {
                    self.labels[0]
                };
            }
            *add = if pos > 0.0 { 2 } else { 3 };
            return if pos > 0.0 {
                self.labels[1]
            } else {
                self.labels[0]
            };
        }
        if pos > 0.0 {
            1
        } else {
            0
        }
    }

    /// One row of a classifier: its label and its scores (onnxruntime's
    /// `FinalizeScores` of the classifier).
    fn classify(&self, mut p: Vec<(f64, bool)>) -> (i64, Vec<f64>) {
        let base = &self.e.base;
        let mut add = -1;
        let label;
        if p.len() > 2 {
            for (k, &b) in base.iter().enumerate().take(p.len()) {
                p[k] = if p[k].1 {
                    (p[k].0 + b, true)
                } else {
                    (b, true)
                };
            }
            let mut best: Option<usize> = None;
            for (k, &(s, has)) in p.iter().enumerate() {
                if has && best.is_none_or(|b| s > p[b].0) {
                    best = Some(k);
                }
            }
            label = best.map_or(self.labels[0], |b| self.labels[b]);
        } else {
            if base.len() == 2 {
                if p[1].1 {
                    p[1].0 = base[1] + p[0].0;
                    p[0].0 = -p[1].0;
                } else {
                    p[1].0 += base[1];
                    p[0].0 += base[0];
                }
            } else if base.len() == 1 {
                // As onnxruntime 1.32: when only the second class has votes,
                // the single base value is not used.
                if !p[1].1 || p[0].1 {
                    p[0].0 += base[0];
                    if !p[1].1 {
                        p.pop();
                    }
                }
            } else if base.is_empty() {
                add = 3;
                if !p[1].1 {
                    p.pop();
                }
            }
            let s1 = if p.len() == 2 && p[1].1 {
                p[1]
            } else {
                (0.0, false)
            };
            label = self.binary_label(p[0], s1, &mut add);
        }
        let scores = write_scores(p.iter().map(|x| x.0).collect(), self.post, add);
        (label, scores)
    }
}

impl Operator for Trees {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let n = x.shape.map(|s| match s {
            [_] => Dim::Fixed(1),
            [n, _] => n.clone(),
            _ => Dim::Unknown,
        });
        let t = Dim::Fixed(self.e.n_targets);
        Ok(match self.output {
            Output::Classifier => {
                check_numeric(self.name, x.dtype)?;
                vec![
                    (self.label_out.dtype(), n.clone().map(|n| vec![n])),
                    (DType::F32, n.map(|n| vec![n, t])),
                ]
            }
            Output::Regressor => {
                check_numeric(self.name, x.dtype)?;
                vec![(DType::F32, n.map(|n| vec![n, t]))]
            }
            Output::Generic => {
                if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16) {
                    return metal_mps_ir::unsupported!("TreeEnsemble on {} tensors", x.dtype);
                }
                vec![(x.dtype, n.map(|n| vec![n, t]))]
            }
        })
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let (n, f) = rows_features(self.name, x.shape())?;
        let xs = values(x);
        let nt = self.e.n_targets;
        let total = n.checked_mul(nt).ok_or_else(|| {
            metal_mps_ir::Error::TooLarge(format!("{}: {n} rows of {nt} scores", self.name))
        })?;
        metal_mps_ir::limits::check_tensor_bytes(total.saturating_mul(8))?;
        let mut labels = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(total);
        for r in 0..n {
            let p = self.e.row(self.name, &xs[r * f..(r + 1) * f])?;
            match self.output {
                Output::Classifier => {
                    let (l, mut s) = self.classify(p);
                    s.resize(nt, 0.0);
                    labels.push(l);
                    scores.extend(s);
                }
                _ => {
                    let mut s: Vec<f64> = p
                        .iter()
                        .enumerate()
                        .map(|(k, &(v, _))| v + self.e.base.get(k).copied().unwrap_or(0.0))
                        .collect();
                    s = write_scores(s, self.post, -1);
                    scores.extend(s);
                }
            }
        }
        let dt = match self.output {
            Output::Generic => x.dtype(),
            _ => DType::F32,
        };
        let z = crate::support::from_f64s(dt, vec![n, nt], &scores)?;
        Ok(match self.output {
            Output::Classifier => vec![self.label_out.output(labels)?, z],
            _ => vec![z],
        })
    }

    fn takes_strings(&self) -> bool {
        matches!(self.label_out, Labels::Strings(_))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
