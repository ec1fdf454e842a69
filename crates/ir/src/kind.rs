//! Values that are not (only) tensors: ONNX sequences and optionals.
//!
//! A graph value has a [`Kind`]; its `dtype` and `shape` in
//! [`crate::Value`] then describe the tensors inside it (the elements of a
//! sequence, the tensor or sequence elements an optional may hold). At run
//! time such values are [`Datum`]s. They live on the CPU: operators that take
//! or make them implement [`crate::Operator::eval_data`], every other operator
//! keeps seeing plain tensors.

use crate::{DType, Error, Result, Shape, Tensor};
use std::fmt;

/// What a graph value holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Tensor,
    /// A sequence of tensors of one dtype.
    Sequence,
    /// A value of the inner kind, or none.
    Optional(Box<Kind>),
}

impl Kind {
    pub fn is_tensor(&self) -> bool {
        *self == Kind::Tensor
    }

    /// `optional(kind)`.
    pub fn optional(inner: Kind) -> Kind {
        Kind::Optional(Box::new(inner))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Tensor => write!(f, "tensor"),
            Kind::Sequence => write!(f, "sequence"),
            Kind::Optional(k) => write!(f, "optional({k})"),
        }
    }
}

/// A declared type: an ONNX `TypeProto` of a tensor, a sequence of tensors or
/// an optional of either (`dtype` and `shape` of the tensors inside).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueType {
    pub kind: Kind,
    pub dtype: DType,
    pub shape: Option<Shape>,
}

/// A value at run time of any [`Kind`].
#[derive(Clone, Debug)]
pub enum Datum {
    Tensor(Tensor),
    Sequence(Vec<Tensor>),
    /// `None`: an optional without a value.
    Optional(Option<Box<Datum>>),
}

impl Datum {
    pub fn kind(&self) -> Kind {
        match self {
            Datum::Tensor(_) => Kind::Tensor,
            Datum::Sequence(_) => Kind::Sequence,
            // An empty optional does not say what it would hold: tensor by default.
            Datum::Optional(v) => {
                Kind::optional(v.as_deref().map(Datum::kind).unwrap_or(Kind::Tensor))
            }
        }
    }

    /// Whether this value fits a value declared `kind` (an empty optional fits every optional).
    pub fn fits(&self, kind: &Kind) -> bool {
        match (self, kind) {
            (Datum::Tensor(_), Kind::Tensor) | (Datum::Sequence(_), Kind::Sequence) => true,
            (Datum::Optional(None), Kind::Optional(_)) => true,
            (Datum::Optional(Some(v)), Kind::Optional(k)) => v.fits(k),
            _ => false,
        }
    }

    /// Bytes of the tensors it holds.
    pub fn bytes(&self) -> usize {
        match self {
            Datum::Tensor(t) => t.as_bytes().len(),
            Datum::Sequence(s) => s.iter().map(|t| t.as_bytes().len()).sum(),
            Datum::Optional(v) => v.as_deref().map_or(0, Datum::bytes),
        }
    }

    /// The tensor, or an error naming what this is instead.
    pub fn tensor(&self) -> Result<&Tensor> {
        match self {
            Datum::Tensor(t) => Ok(t),
            other => crate::invalid!("expected a tensor, got a {}", other.kind()),
        }
    }

    pub fn into_tensor(self) -> Result<Tensor> {
        match self {
            Datum::Tensor(t) => Ok(t),
            other => crate::invalid!("expected a tensor, got a {}", other.kind()),
        }
    }

    /// The sequence's tensors, or an error naming what this is instead.
    pub fn sequence(&self) -> Result<&[Tensor]> {
        match self {
            Datum::Sequence(s) => Ok(s),
            other => crate::invalid!("expected a sequence, got a {}", other.kind()),
        }
    }

    /// A short description for messages: `tensor FLOAT [2, 3]`, `sequence of 3`, `optional(none)`.
    pub fn describe(&self) -> String {
        match self {
            Datum::Tensor(t) => format!("tensor {} {:?}", t.dtype(), t.shape()),
            Datum::Sequence(s) => format!("sequence of {}", s.len()),
            Datum::Optional(None) => "optional(none)".into(),
            Datum::Optional(Some(v)) => format!("optional({})", v.describe()),
        }
    }
}

impl From<Tensor> for Datum {
    fn from(t: Tensor) -> Datum {
        Datum::Tensor(t)
    }
}

/// The error for a tensor-only operator given a non-tensor value.
pub fn tensors_only(op: &str, input: usize, kind: &Kind) -> Error {
    Error::Unsupported(format!(
        "{op} takes tensors, but input {input} is a {kind} value"
    ))
}
