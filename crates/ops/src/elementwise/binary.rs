//! Two-input elementwise operators with broadcasting: comparisons (BOOL out),
//! logic on BOOL, bitwise operations and shifts on integers, Mod and PRelu.

use crate::support::{arg, check_same, known, map2};
use crate::BuildCx;
use metal_mps_ir::infer::{broadcast_known, Known};
use metal_mps_ir::{BoolByte, DType, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    ShiftLeft,
    ShiftRight,
    /// `fmod`: the sign of the dividend (C's fmod); otherwise the divisor's (Python's %).
    Mod {
        fmod: bool,
    },
    PRelu,
}

#[derive(Debug)]
struct Binary {
    name: String,
    kind: Kind,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let kind = match cx.op_type {
        "Equal" => Kind::Equal,
        "Less" => Kind::Less,
        "Greater" => Kind::Greater,
        "LessOrEqual" => Kind::LessOrEqual,
        "GreaterOrEqual" => Kind::GreaterOrEqual,
        "And" => Kind::And,
        "Or" => Kind::Or,
        "Xor" => Kind::Xor,
        "BitwiseAnd" => Kind::BitwiseAnd,
        "BitwiseOr" => Kind::BitwiseOr,
        "BitwiseXor" => Kind::BitwiseXor,
        "BitShift" => match cx.attrs.string("direction")?.as_deref() {
            Some("LEFT") => Kind::ShiftLeft,
            Some("RIGHT") => Kind::ShiftRight,
            other => return metal_mps_ir::invalid!("BitShift direction {other:?} (LEFT or RIGHT)"),
        },
        "Mod" => Kind::Mod {
            fmod: cx.attrs.flag("fmod", false)?,
        },
        "PRelu" => Kind::PRelu,
        other => return metal_mps_ir::unsupported!("elementwise operator '{other}'"),
    };
    let op = Op::Dyn(DynOp::new(Binary {
        name: cx.op_type.to_string(),
        kind,
    }));
    super::legacy::wrap(cx, op)
}

impl Binary {
    fn out_dtype(&self, a: DType, b: DType) -> Result<DType> {
        check_same(&self.name, a, b)?;
        let ok = match self.kind {
            Kind::Equal => true,
            Kind::Less | Kind::Greater | Kind::LessOrEqual | Kind::GreaterOrEqual => {
                a != DType::Bool
            }
            Kind::And | Kind::Or | Kind::Xor => a == DType::Bool,
            Kind::BitwiseAnd | Kind::BitwiseOr | Kind::BitwiseXor => a.is_int(),
            Kind::ShiftLeft | Kind::ShiftRight => a.is_int(),
            Kind::Mod { .. } => a.is_int() || a.is_float(),
            Kind::PRelu => a.is_float() || a.is_int(),
        };
        if !ok {
            return metal_mps_ir::unsupported!("{} on {a} tensors", self.name);
        }
        Ok(match self.kind {
            Kind::Equal
            | Kind::Less
            | Kind::Greater
            | Kind::LessOrEqual
            | Kind::GreaterOrEqual
            | Kind::And
            | Kind::Or
            | Kind::Xor => DType::Bool,
            _ => a,
        })
    }
}

fn compare<T: Element>(k: Kind, a: &Tensor, b: &Tensor, out: &mut Out) -> Result<Tensor> {
    let f: fn(&T, &T) -> bool = match k {
        Kind::Equal => |x, y| x == y,
        Kind::Less => |x, y| x < y,
        Kind::Greater => |x, y| x > y,
        Kind::LessOrEqual => |x, y| x <= y,
        _ => |x, y| x >= y,
    };
    map2(a, b, out, |x: T, y: T| BoolByte(f(&x, &y) as u8))
}

fn logic(k: Kind, a: &Tensor, b: &Tensor, out: &mut Out) -> Result<Tensor> {
    let f: fn(bool, bool) -> bool = match k {
        Kind::And => |x, y| x && y,
        Kind::Or => |x, y| x || y,
        _ => |x, y| x != y,
    };
    map2(a, b, out, |x: BoolByte, y: BoolByte| {
        BoolByte(f(x.0 != 0, y.0 != 0) as u8)
    })
}

/// Integer operations, computed on the i64 value and wrapped back.
fn integer<T: Element>(k: Kind, a: &Tensor, b: &Tensor, out: &mut Out) -> Result<Tensor> {
    let bits = (T::DTYPE.size() * 8) as i64;
    let unsigned = !T::DTYPE.is_signed_int();
    let f = move |x: i64, y: i64| -> i64 {
        match k {
            Kind::BitwiseAnd => x & y,
            Kind::BitwiseOr => x | y,
            Kind::BitwiseXor => x ^ y,
            Kind::ShiftLeft if (0..bits).contains(&y) => ((x as u64) << y) as i64,
            // Signed values shift arithmetically (numpy's right_shift).
            Kind::ShiftRight if unsigned && (0..bits).contains(&y) => ((x as u64) >> y) as i64,
            Kind::ShiftRight if (0..bits).contains(&y) => x >> y,
            // A shift amount is read as unsigned: a negative one shifts every bit out, leaving
            // the sign's fill.
            Kind::ShiftRight if unsigned => 0,
            Kind::ShiftRight => x >> 63,
            Kind::ShiftLeft => 0,
            Kind::Mod { .. } if y == 0 => 0,
            Kind::Mod { fmod: true } => x.wrapping_rem(y),
            Kind::Mod { fmod: false } => {
                let r = x.wrapping_rem(y);
                if r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            }
            _ => {
                if x < 0 {
                    x.wrapping_mul(y)
                } else {
                    x
                }
            }
        }
    };
    if unsigned && T::DTYPE == DType::U64 {
        // u64 values above i64::MAX: the bit operations are the same on the
        // two's complement bits; Mod needs the unsigned values.
        return map2(a, b, out, move |x: T, y: T| {
            let (p, q) = (x.to_i64() as u64, y.to_i64() as u64);
            T::from_i64(match k {
                Kind::Mod { .. } => p.checked_rem(q).unwrap_or(0) as i64,
                Kind::PRelu => p as i64,
                _ => f(p as i64, q as i64),
            })
        });
    }
    map2(a, b, out, move |x: T, y: T| {
        T::from_i64(f(x.to_i64(), y.to_i64()))
    })
}

fn float<T: Element>(k: Kind, a: &Tensor, b: &Tensor, out: &mut Out) -> Result<Tensor> {
    map2(a, b, out, move |x: T, y: T| {
        let (p, q) = (x.to_f64(), y.to_f64());
        T::from_f64(match k {
            Kind::Mod { fmod: true } => p % q,
            // The sign of the divisor (numpy's mod).
            Kind::Mod { fmod: false } => {
                let r = p % q;
                if r != 0.0 && ((r < 0.0) != (q < 0.0)) {
                    r + q
                } else {
                    r
                }
            }
            _ => {
                if p < 0.0 {
                    p * q
                } else {
                    p
                }
            }
        })
    })
}

impl Operator for Binary {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (a, b) = (known(ins, 0)?, known(ins, 1)?);
        let dtype = self.out_dtype(a.dtype, b.dtype)?;
        let shape = if self.kind == Kind::PRelu {
            // The slope broadcasts to the input's shape.
            a.shape.map(<[_]>::to_vec)
        } else {
            broadcast_known(&[a, b])?
        };
        Ok(vec![(dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (a, b) = (arg(ins, 0)?, arg(ins, 1)?);
        let dtype = a.dtype();
        self.out_dtype(dtype, b.dtype())?;
        let k = self.kind;
        let y = match k {
            Kind::Equal | Kind::Less | Kind::Greater | Kind::LessOrEqual | Kind::GreaterOrEqual => {
                metal_mps_ir::dispatch_dtype!(dtype, T => compare::<T>(k, a, b, out)?)
            }
            Kind::And | Kind::Or | Kind::Xor => logic(k, a, b, out)?,
            _ if dtype.is_float() => {
                metal_mps_ir::dispatch_dtype!(dtype, T => float::<T>(k, a, b, out)?)
            }
            _ => metal_mps_ir::dispatch_dtype!(dtype, T => integer::<T>(k, a, b, out)?),
        };
        if k == Kind::PRelu && y.shape() != a.shape() {
            return metal_mps_ir::invalid!(
                "PRelu: slope {:?} does not broadcast to the input {:?}",
                b.shape(),
                a.shape()
            );
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
