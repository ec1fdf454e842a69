//! Every operator metal_mps imports, in one table.
//!
//! A row ([`OpDef`]) maps an ONNX domain, op type and first opset to a builder
//! that reads the node's attributes and returns its IR [`Op`]. The fast paths
//! the engines know by name (Conv, MatMul, the elementwise arithmetic, the
//! layout ops) are built as variants of [`Op`] (`builtin/`); every other
//! operator is one module that implements [`metal_mps_ir::Operator`] (its
//! inference and reference CPU kernel) and is built as [`Op::Dyn`]. The
//! families below each export their rows as `OPS`.

mod attrs;
mod builtin;
pub mod support;

pub mod attention;
pub mod control;
pub mod elementwise;
pub mod index;
pub mod math;
pub mod nn;
pub mod quant;
pub mod sequence;
pub mod spatial;
pub mod tensor;
pub mod text;

pub use attrs::{Attribute, Attributes};

use metal_mps_ir::{Error, Op, Result};

/// What a builder sees of a node.
pub struct BuildCx<'a> {
    pub op_type: &'a str,
    /// `""` for the default ONNX domain.
    pub domain: &'a str,
    /// The model's opset of the node's domain.
    pub opset: i64,
    pub attrs: &'a Attributes,
    /// The node's ONNX inputs (omitted optional ones included, as empty names);
    /// outer-scope values that subgraphs read come after them.
    pub num_inputs: usize,
    pub num_outputs: usize,
}

/// Builds the IR op of one node.
pub type Builder = fn(&BuildCx) -> Result<Op>;

/// One row of the table: `build` serves `name` of `domain` from opset `since`
/// up to the next row of the same op (the builder may still branch on
/// [`BuildCx::opset`] for small differences).
pub struct OpDef {
    pub domain: &'static str,
    pub name: &'static str,
    pub since: i64,
    pub build: Builder,
}

/// A row of the default ONNX domain.
pub const fn onnx(name: &'static str, since: i64, build: Builder) -> OpDef {
    OpDef {
        domain: "",
        name,
        since,
        build,
    }
}

/// A row of the `ai.onnx.ml` domain.
pub const fn ml(name: &'static str, since: i64, build: Builder) -> OpDef {
    OpDef {
        domain: "ai.onnx.ml",
        name,
        since,
        build,
    }
}

/// The families, each a slice of rows.
const FAMILIES: &[&[OpDef]] = &[
    builtin::OPS,
    elementwise::OPS,
    tensor::OPS,
    index::OPS,
    math::OPS,
    nn::OPS,
    spatial::OPS,
    attention::OPS,
    control::OPS,
    quant::OPS,
    sequence::OPS,
    text::OPS,
];

/// Every row.
pub fn all() -> impl Iterator<Item = &'static OpDef> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// `ai.onnx` is the default domain's long name.
pub fn normalize_domain(domain: &str) -> &str {
    match domain {
        "ai.onnx" => "",
        d => d,
    }
}

/// The row serving `name` of `domain` at `opset`.
pub fn lookup(domain: &str, name: &str, opset: i64) -> Result<&'static OpDef> {
    let domain = normalize_domain(domain);
    let rows: Vec<&OpDef> = all()
        .filter(|d| d.domain == domain && d.name == name)
        .collect();
    let shown = if domain.is_empty() { "ai.onnx" } else { domain };
    if rows.is_empty() {
        return Err(Error::Unsupported(format!(
            "operator '{name}' of domain '{shown}' is not implemented"
        )));
    }
    rows.iter()
        .filter(|d| d.since <= opset)
        .max_by_key(|d| d.since)
        .copied()
        .ok_or_else(|| {
            let first = rows.iter().map(|d| d.since).min().unwrap_or_default();
            Error::Unsupported(format!(
                "operator '{name}' of domain '{shown}' at opset {opset} (implemented from opset {first})"
            ))
        })
}

/// Builds one node's op.
pub fn build(cx: &BuildCx) -> Result<Op> {
    (lookup(cx.domain, cx.op_type, cx.opset)?.build)(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_do_not_overlap() {
        let mut seen = std::collections::HashSet::new();
        for d in all() {
            assert!(
                seen.insert((d.domain, d.name, d.since)),
                "two rows for {}:{} from opset {}",
                d.domain,
                d.name,
                d.since
            );
        }
    }

    #[test]
    fn lookup_takes_the_newest_row_at_or_below_the_opset() {
        assert_eq!(lookup("", "Add", 7).unwrap().name, "Add");
        assert_eq!(lookup("ai.onnx", "HardSwish", 14).unwrap().since, 14);
        let below = lookup("", "HardSwish", 13).err().unwrap().to_string();
        assert!(
            below.contains("opset 13") && below.contains("from opset 14"),
            "{below}"
        );
        let unknown = lookup("com.example", "Frobnicate", 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            unknown.contains("'Frobnicate'") && unknown.contains("'com.example'"),
            "{unknown}"
        );
    }
}
