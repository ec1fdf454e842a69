//! Reading and writing tensors: `.npy` (numpy) and `.pb` (ONNX TensorProto).

use anyhow::{bail, Context, Result};
use metal_mps::{f16, BoolByte, DType, Datum, Kind, Tensor};
use npyz::WriterBuilder;
use std::path::Path;

/// Reads a tensor from `.npy` or TensorProto `.pb`, by extension.
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(&bytes).with_context(|| format!("reading {}", path.display())),
        Some("pb") => Ok(metal_mps_onnx::parse_tensor_proto(&bytes)
            .with_context(|| format!("reading {}", path.display()))?),
        _ => bail!("{}: expected a .npy or .pb file", path.display()),
    }
}

/// Reads a value of `kind`: a tensor as [`read_tensor`] does, a sequence or
/// optional from a `SequenceProto` / `OptionalProto` `.pb` file.
pub fn read_value(path: &Path, kind: &Kind) -> Result<Datum> {
    if kind.is_tensor() {
        return Ok(Datum::Tensor(read_tensor(path)?));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("pb") {
        bail!(
            "{}: a {kind} value is read from a .pb file (SequenceProto / OptionalProto, as \
             onnx.numpy_helper.from_list / from_optional write them)",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    metal_mps_onnx::parse_value_proto(&bytes, kind)
        .with_context(|| format!("reading {}", path.display()))
}

fn read_npy(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes)?;
    if npy.order() != npyz::Order::C {
        bail!("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let t = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => Tensor::from_vec(shape, npy.into_vec::<f32>()?)?,
        "f2" => Tensor::from_vec(shape, npy.into_vec::<f16>()?)?,
        "i1" => Tensor::from_vec(shape, npy.into_vec::<i8>()?)?,
        "i2" => Tensor::from_vec(shape, npy.into_vec::<i16>()?)?,
        "i4" => Tensor::from_vec(shape, npy.into_vec::<i32>()?)?,
        "i8" => Tensor::from_vec(shape, npy.into_vec::<i64>()?)?,
        "u1" => Tensor::from_vec(shape, npy.into_vec::<u8>()?)?,
        "u2" => Tensor::from_vec(shape, npy.into_vec::<u16>()?)?,
        "u4" => Tensor::from_vec(shape, npy.into_vec::<u32>()?)?,
        "u8" => Tensor::from_vec(shape, npy.into_vec::<u64>()?)?,
        "f8" => Tensor::from_vec(shape, npy.into_vec::<f64>()?)?,
        // numpy's fixed-width text ('U': UTF-32, 'S': bytes) as STRING.
        d if d.starts_with('U') || d.starts_with('S') => Tensor::from_strings(
            shape,
            npy.into_vec::<String>()?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        )?,
        "O" => bail!(
            "numpy object arrays are pickled and cannot be read; save strings with \
             arr.astype(str) (numpy dtype 'U')"
        ),
        "b1" => Tensor::from_vec(
            shape,
            npy.into_vec::<bool>()?
                .into_iter()
                .map(|b| BoolByte(b as u8))
                .collect(),
        )?,
        other => bail!(
            "numpy dtype '{other}' is not supported (float16/32/64, int8/16/32/64, uint8/16/32/64, bool, str)"
        ),
    };
    Ok(t)
}

/// Writes a tensor as `.npy`.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let w = std::io::BufWriter::new(file);
    macro_rules! write_as {
        ($ty:ty, $data:expr) => {{
            let mut writer = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            writer.extend($data)?;
            writer.finish()?;
        }};
    }
    match t.dtype() {
        DType::F32 => write_as!(f32, t.as_slice::<f32>()?.iter().copied()),
        DType::F16 => write_as!(f16, t.as_slice::<f16>()?.iter().copied()),
        DType::I8 => write_as!(i8, t.as_slice::<i8>()?.iter().copied()),
        DType::I16 => write_as!(i16, t.as_slice::<i16>()?.iter().copied()),
        DType::I32 => write_as!(i32, t.as_slice::<i32>()?.iter().copied()),
        DType::I64 => write_as!(i64, t.as_slice::<i64>()?.iter().copied()),
        DType::U8 => write_as!(u8, t.as_slice::<u8>()?.iter().copied()),
        DType::U16 => write_as!(u16, t.as_slice::<u16>()?.iter().copied()),
        DType::U32 => write_as!(u32, t.as_slice::<u32>()?.iter().copied()),
        DType::U64 => write_as!(u64, t.as_slice::<u64>()?.iter().copied()),
        DType::F64 => write_as!(f64, t.as_slice::<f64>()?.iter().copied()),
        // numpy has no bfloat16: written as float32, which holds every value exactly.
        DType::BF16 => write_as!(
            f32,
            t.as_slice::<metal_mps::bf16>()?.iter().map(|v| v.to_f32())
        ),
        DType::Bool => write_as!(bool, t.as_slice::<BoolByte>()?.iter().map(|b| b.0 != 0)),
        // numpy's 'U' (UTF-32) of the widest string; bytes that are not UTF-8
        // become U+FFFD.
        DType::String => {
            let text: Vec<String> = t
                .as_strings()?
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let width = text
                .iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(1);
            let dtype = npyz::DType::Plain(format!("<U{width}").parse()?);
            let mut writer = npyz::WriteOptions::<str>::new()
                .dtype(dtype)
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            for s in &text {
                writer.push(s.as_str())?;
            }
            writer.finish()?;
        }
        d => anyhow::bail!(
            "{}: .npy has no {d} type (write a TensorProto, or Cast the output to FLOAT or an \
             8-bit integer type first)",
            path.display()
        ),
    }
    Ok(())
}

/// A file name safe on every platform for an output named `name`.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
