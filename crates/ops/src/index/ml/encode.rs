//! LabelEncoder and CategoryMapper: element-wise lookups from keys to values,
//! each side integers, floats or strings.

use super::positions;
use crate::support::{arg, from_f64s, from_i64s, known, like};
use crate::{Attributes, BuildCx};
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::collections::HashMap;

/// A list of keys or values of one type.
#[derive(Clone, Debug)]
enum Column {
    Ints(DType, Vec<i64>),
    Floats(DType, Vec<f64>),
    Strings(Vec<Vec<u8>>),
}

impl Column {
    fn dtype(&self) -> DType {
        match self {
            Column::Ints(d, _) | Column::Floats(d, _) => *d,
            Column::Strings(_) => DType::String,
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Ints(_, v) => v.len(),
            Column::Floats(_, v) => v.len(),
            Column::Strings(v) => v.len(),
        }
    }

    fn of_tensor(op: &str, t: &Tensor) -> Result<Column> {
        let d = t.dtype();
        Ok(match d {
            DType::String => Column::Strings(t.as_strings()?.to_vec()),
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Column::Floats(d, t.to_f64_vec()),
            d if d.is_int() => Column::Ints(d, t.to_i64_vec()?),
            d => return metal_mps_ir::unsupported!("{op} with {d} keys or values"),
        })
    }

    /// `name_tensor`, `name_floats`, `name_int64s` or `name_strings`.
    fn read(op: &str, a: &Attributes, name: &str) -> Result<Option<Column>> {
        if let Some(t) = a.tensor(&format!("{name}_tensor"))? {
            return Column::of_tensor(op, &t).map(Some);
        }
        if let Some(f) = a.floats(&format!("{name}_floats"))? {
            return Ok(Some(Column::Floats(
                DType::F32,
                f.into_iter().map(f64::from).collect(),
            )));
        }
        if let Some(i) = a.ints(&format!("{name}_int64s"))? {
            return Ok(Some(Column::Ints(DType::I64, i)));
        }
        Ok(a.byte_strings(&format!("{name}_strings"))?
            .map(Column::Strings))
    }

    /// The output tensor of `shape` whose elements are this column's `picks`.
    fn gather(&self, shape: Vec<usize>, picks: &[usize]) -> Result<Tensor> {
        match self {
            Column::Ints(d, v) => {
                let y: Vec<i64> = picks.iter().map(|&i| v[i]).collect();
                from_i64s(*d, shape, &y)
            }
            Column::Floats(d, v) => {
                let y: Vec<f64> = picks.iter().map(|&i| v[i]).collect();
                from_f64s(*d, shape, &y)
            }
            Column::Strings(v) => {
                Tensor::from_strings(shape, picks.iter().map(|&i| v[i].clone()).collect())
            }
        }
    }
}

/// Keys to their positions.
#[derive(Debug)]
enum Index {
    Ints(HashMap<i64, usize>),
    /// By bit pattern (0.0 and -0.0 alike); NaN keys match any NaN.
    Floats(HashMap<u64, usize>, Option<usize>),
    Strings(HashMap<Vec<u8>, usize>),
}

fn float_key(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

impl Index {
    /// Each key to its first position (onnxruntime keeps the first of
    /// repeated keys).
    fn new(keys: &Column) -> Index {
        match keys {
            Column::Ints(_, v) => Index::Ints(positions(v)),
            Column::Floats(_, v) => {
                let (mut m, mut nan) = (HashMap::new(), None);
                for (i, &k) in v.iter().enumerate() {
                    if k.is_nan() {
                        nan.get_or_insert(i);
                    } else {
                        m.entry(float_key(k)).or_insert(i);
                    }
                }
                Index::Floats(m, nan)
            }
            Column::Strings(v) => Index::Strings(positions(v)),
        }
    }

    /// The position of every element of `x` (`miss` where it is no key).
    fn look_up(&self, x: &Tensor, miss: usize) -> Result<Vec<usize>> {
        Ok(match self {
            Index::Ints(m) => x
                .to_i64_vec()?
                .iter()
                .map(|k| m.get(k).copied().unwrap_or(miss))
                .collect(),
            Index::Floats(m, nan) => x
                .to_f64_vec()
                .into_iter()
                .map(|k| {
                    if k.is_nan() {
                        nan.unwrap_or(miss)
                    } else {
                        m.get(&float_key(k)).copied().unwrap_or(miss)
                    }
                })
                .collect(),
            Index::Strings(m) => x
                .as_strings()?
                .iter()
                .map(|k| m.get(k).copied().unwrap_or(miss))
                .collect(),
        })
    }
}

/// A lookup from keys to values; the default value sits after the values.
#[derive(Debug)]
struct Lookup {
    name: &'static str,
    key_dtype: DType,
    index: Index,
    /// The values, then the default.
    values: Column,
}

impl Lookup {
    fn new(
        name: &'static str,
        keys: Column,
        mut values: Column,
        default: Column,
    ) -> Result<Lookup> {
        if keys.len() != values.len() {
            return metal_mps_ir::invalid!(
                "{name}: {} keys but {} values",
                keys.len(),
                values.len()
            );
        }
        match (&mut values, default) {
            (Column::Ints(_, v), Column::Ints(_, d)) => v.extend(d.first()),
            (Column::Floats(_, v), Column::Floats(_, d)) => v.extend(d.first()),
            (Column::Strings(v), Column::Strings(d)) => v.extend(d.into_iter().next()),
            (v, d) => {
                return metal_mps_ir::invalid!(
                    "{name}: the default is {} but the values are {}",
                    d.dtype(),
                    v.dtype()
                )
            }
        }
        if values.len() != keys.len() + 1 {
            return metal_mps_ir::invalid!("{name}: the default value is empty");
        }
        Ok(Lookup {
            name,
            key_dtype: keys.dtype(),
            index: Index::new(&keys),
            values,
        })
    }

    fn check_input(&self, d: DType) -> Result<()> {
        if d != self.key_dtype {
            return metal_mps_ir::invalid!(
                "{}: input is {d} but the keys are {}",
                self.name,
                self.key_dtype
            );
        }
        Ok(())
    }
}

/// The default of a value column of `dtype` when the model gives none.
fn default_of(values: &Column) -> Column {
    match values {
        Column::Ints(d, _) => Column::Ints(*d, vec![-1]),
        Column::Floats(d, _) => Column::Floats(*d, vec![-0.0]),
        Column::Strings(_) => Column::Strings(vec![b"_Unused".to_vec()]),
    }
}

pub fn build_label_encoder(cx: &BuildCx) -> Result<Op> {
    let op = "LabelEncoder";
    let a = cx.attrs;
    let Some(keys) = Column::read(op, a, "keys")? else {
        return metal_mps_ir::invalid!(
            "{op}: no keys (keys_int64s, keys_floats, keys_strings or keys_tensor)"
        );
    };
    let Some(values) = Column::read(op, a, "values")? else {
        return metal_mps_ir::invalid!(
            "{op}: no values (values_int64s, values_floats, values_strings or values_tensor)"
        );
    };
    let default = match &values {
        _ if a.has("default_tensor") => Column::read(op, a, "default")?,
        Column::Ints(..) if a.has("default_int64") => {
            Some(Column::Ints(DType::I64, vec![a.int("default_int64", -1)?]))
        }
        Column::Floats(..) if a.has("default_float") => Some(Column::Floats(
            DType::F32,
            vec![a.float("default_float", -0.0)? as f64],
        )),
        Column::Strings(_) if a.has("default_string") => Some(Column::Strings(vec![a
            .bytes("default_string")?
            .unwrap_or_default()])),
        _ => None,
    }
    .unwrap_or_else(|| default_of(&values));
    Ok(Op::Dyn(DynOp::new(Lookup::new(op, keys, values, default)?)))
}

pub fn build_category_mapper(cx: &BuildCx) -> Result<Op> {
    let op = "CategoryMapper";
    let a = cx.attrs;
    let (Some(ints), Some(strings)) = (a.ints("cats_int64s")?, a.byte_strings("cats_strings")?)
    else {
        return metal_mps_ir::invalid!("{op}: cats_int64s and cats_strings are required");
    };
    let default_int = Column::Ints(DType::I64, vec![a.int("default_int64", -1)?]);
    let default_string = Column::Strings(vec![a
        .bytes("default_string")?
        .unwrap_or_else(|| b"_Unused".to_vec())]);
    let (ints, strings) = (Column::Ints(DType::I64, ints), Column::Strings(strings));
    // The direction follows the input's type: build both and pick at run time.
    Ok(Op::Dyn(DynOp::new(CategoryMapper {
        to_int: Lookup::new(op, strings.clone(), ints.clone(), default_int)?,
        to_string: Lookup::new(op, ints, strings, default_string)?,
    })))
}

impl Lookup {
    fn output_dtype(&self) -> DType {
        self.values.dtype()
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x.dtype())?;
        let miss = self.values.len() - 1;
        let picks = self.index.look_up(x, miss)?;
        self.values.gather(x.shape().to_vec(), &picks)
    }
}

impl Operator for Lookup {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        self.check_input(x.dtype)?;
        Ok(vec![like(x, self.output_dtype())])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        Ok(vec![self.apply(arg(ins, 0)?)?])
    }

    fn takes_strings(&self) -> bool {
        self.key_dtype == DType::String || self.output_dtype() == DType::String
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// CategoryMapper: STRING to INT64 or INT64 to STRING, by the input's type.
#[derive(Debug)]
struct CategoryMapper {
    to_int: Lookup,
    to_string: Lookup,
}

impl CategoryMapper {
    fn direction(&self, d: DType) -> Result<&Lookup> {
        match d {
            DType::String => Ok(&self.to_int),
            DType::I64 => Ok(&self.to_string),
            d => metal_mps_ir::invalid!("CategoryMapper takes STRING or INT64, not {d}"),
        }
    }
}

impl Operator for CategoryMapper {
    fn name(&self) -> &str {
        "CategoryMapper"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        Ok(vec![like(x, self.direction(x.dtype)?.output_dtype())])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        Ok(vec![self.direction(x.dtype())?.apply(x)?])
    }

    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
