//! StringNormalizer (opset 10): drops stop words, then changes case (Unicode
//! lower/upper case; the `locale` attribute changes nothing further).

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Lower,
    Upper,
    None,
}

#[derive(Debug)]
struct StringNormalizer {
    case: Case,
    case_sensitive: bool,
    /// Stop words, lower-cased when matching ignores case.
    stopwords: HashSet<String>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let case = match cx.attrs.str_or("case_change_action", "NONE")?.as_str() {
        "LOWER" => Case::Lower,
        "UPPER" => Case::Upper,
        "NONE" => Case::None,
        o => {
            return metal_mps_ir::invalid!(
                "StringNormalizer: case_change_action '{o}' is not LOWER, UPPER or NONE"
            )
        }
    };
    let case_sensitive = cx.attrs.flag("is_case_sensitive", false)?;
    let stopwords = cx
        .attrs
        .strings("stopwords")?
        .unwrap_or_default()
        .into_iter()
        .map(|w| if case_sensitive { w } else { w.to_lowercase() })
        .collect();
    Ok(Op::Dyn(DynOp::new(StringNormalizer {
        case,
        case_sensitive,
        stopwords,
    })))
}

impl StringNormalizer {
    fn is_stopword(&self, w: &str) -> bool {
        if self.case_sensitive {
            self.stopwords.contains(w)
        } else {
            self.stopwords.contains(&w.to_lowercase())
        }
    }
}

impl Operator for StringNormalizer {
    fn name(&self) -> &str {
        "StringNormalizer"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype != DType::String {
            return metal_mps_ir::invalid!("StringNormalizer takes STRING, not {}", x.dtype);
        }
        let shape = match x.shape.map(<[Dim]>::len) {
            Some(1) => Some(vec![Dim::Unknown]),
            Some(2) => Some(vec![Dim::Fixed(1), Dim::Unknown]),
            _ => None,
        };
        Ok(vec![(DType::String, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let matrix = match x.shape() {
            [_] => false,
            [1, _] => true,
            s => {
                return metal_mps_ir::invalid!(
                    "StringNormalizer: input of shape {s:?} (expected [C] or [1, C])"
                )
            }
        };
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for s in x.as_strings()? {
            let w = String::from_utf8_lossy(s);
            if self.is_stopword(&w) {
                continue;
            }
            kept.push(match self.case {
                Case::Lower => w.to_lowercase().into_bytes(),
                Case::Upper => w.to_uppercase().into_bytes(),
                Case::None => s.clone(),
            });
        }
        // Everything dropped: one empty string, as onnxruntime gives.
        if kept.is_empty() {
            kept.push(Vec::new());
        }
        let shape = if matrix {
            vec![1, kept.len()]
        } else {
            vec![kept.len()]
        };
        Ok(vec![Tensor::from_strings(shape, kept)?])
    }

    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
