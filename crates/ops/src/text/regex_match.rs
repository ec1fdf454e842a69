//! RegexFullMatch (opset 20): whether each string matches a pattern from start
//! to end. Patterns are RE2 syntax; the `regex` crate implements the same
//! syntax and, like RE2, guarantees linear-time matching.

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use regex::bytes::{Regex, RegexBuilder};
use std::any::Any;

/// The most memory one compiled pattern may take.
const MAX_PATTERN_BYTES: usize = 64 << 20;

#[derive(Debug)]
struct RegexFullMatch {
    regex: Regex,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let Some(pattern) = cx.attrs.string("pattern")? else {
        return metal_mps_ir::invalid!("RegexFullMatch: attribute 'pattern' is required");
    };
    let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_PATTERN_BYTES)
        .build()
        .map_err(|e| {
            metal_mps_ir::Error::InvalidModel(format!(
                "RegexFullMatch: pattern {pattern:?} is not a valid RE2 pattern: {e}"
            ))
        })?;
    Ok(Op::Dyn(DynOp::new(RegexFullMatch { regex })))
}

impl Operator for RegexFullMatch {
    fn name(&self) -> &str {
        "RegexFullMatch"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype != DType::String {
            return metal_mps_ir::invalid!("RegexFullMatch takes STRING, not {}", x.dtype);
        }
        Ok(vec![(DType::Bool, x.shape.map(<[_]>::to_vec))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let y: Vec<u8> = x
            .as_strings()?
            .iter()
            .map(|s| u8::from(self.regex.is_match(s)))
            .collect();
        Ok(vec![Tensor::from_bytes(
            DType::Bool,
            x.shape().to_vec(),
            &y,
        )?])
    }

    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes};
    use std::collections::HashMap;

    fn op(pattern: &str) -> Result<Op> {
        let attrs = Attributes::new(HashMap::from([(
            "pattern".to_string(),
            Attribute::String(pattern.into()),
        )]));
        build(&crate::BuildCx {
            op_type: "RegexFullMatch",
            domain: "",
            opset: 20,
            attrs: &attrs,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    fn matches(pattern: &str, inputs: &[&str]) -> Vec<bool> {
        let Op::Dyn(d) = op(pattern).unwrap() else {
            unreachable!()
        };
        let x = Tensor::from_strings(
            vec![inputs.len()],
            inputs.iter().map(|s| s.as_bytes().to_vec()).collect(),
        )
        .unwrap();
        let y = d.eval(&[Some(&x)], 1, &mut Out::fresh()).unwrap();
        y[0].as_bytes().iter().map(|&b| b != 0).collect()
    }

    // Expected values: what Python's `re.fullmatch` (and RE2's FullMatch) say.
    #[test]
    fn matches_whole_strings_only() {
        assert_eq!(
            matches("a|ab", &["a", "ab", "abc", ""]),
            [true, true, false, false]
        );
        assert_eq!(
            matches(
                r"[\w.]+@example\.com",
                &["x.y@example.com", "x@example.org"]
            ),
            [true, false]
        );
        assert_eq!(matches("", &["", "a"]), [true, false]);
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_text() {
        let err = op("(unclosed").unwrap_err().to_string();
        assert!(
            err.contains("(unclosed") && err.contains("RegexFullMatch"),
            "{err}"
        );
    }
}
