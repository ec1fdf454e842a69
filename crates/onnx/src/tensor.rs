//! `TensorProto` → [`Tensor`], including external data files.

use crate::proto::TensorProto;
use metal_mps_ir::{checked_bytes, DType, Error, Result, Tensor};
use prost::Message;
use std::path::Path;

/// Maps an ONNX element type to ours; types we do not compute with are
/// refused with a message naming them.
pub fn dtype_from_onnx(code: i32) -> Result<DType> {
    DType::from_onnx_code(code.into())
}

/// Parses a serialized `TensorProto` (the `.pb` files of ONNX test cases).
pub fn parse_tensor_proto(bytes: &[u8]) -> Result<Tensor> {
    let proto = TensorProto::decode(bytes)
        .map_err(|e| Error::InvalidModel(format!("not a TensorProto: {e}")))?;
    tensor_from_proto(&proto, None)
}

/// Converts a tensor; `base_dir` is where external data files are looked up.
pub fn tensor_from_proto(p: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = p.name.as_deref().unwrap_or("<unnamed>");
    let wrap = |e: Error| match e {
        Error::Unsupported(m) => Error::Unsupported(format!("tensor '{name}': {m}")),
        other => Error::InvalidModel(format!("tensor '{name}': {other}")),
    };
    convert(p, base_dir).map_err(wrap)
}

fn convert(p: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let dtype = dtype_from_onnx(p.data_type.unwrap_or(0))?;
    let mut shape = Vec::with_capacity(p.dims.len());
    for &d in &p.dims {
        if d < 0 {
            return Err(Error::InvalidModel(format!(
                "negative dimension {d} in {:?}",
                p.dims
            )));
        }
        shape.push(usize::try_from(d).map_err(|_| Error::TooLarge(format!("dimension {d}")))?);
    }
    if dtype == DType::String {
        return convert_strings(p, shape);
    }
    let bytes = checked_bytes(dtype, &shape)?;
    if let Some(bits) = dtype.packed_bits() {
        return convert_packed(p, base_dir, dtype, shape, bytes, bits);
    }
    // Refuse before allocating: the declared size must be backed by data.
    let available = available_bytes(p, dtype);
    if p.data_location == Some(1) {
        let raw = read_external(p, base_dir, bytes)?;
        return Tensor::from_bytes(dtype, shape, &raw);
    }
    if available != bytes {
        return Err(Error::InvalidModel(format!(
            "declares {dtype} {:?} ({bytes} bytes) but holds {available} bytes of data",
            p.dims
        )));
    }
    if let Some(raw) = &p.raw_data {
        return Tensor::from_bytes(dtype, shape, raw);
    }
    match dtype {
        DType::F32 => Tensor::from_slice(shape, &p.float_data),
        DType::F64 => Tensor::from_slice(shape, &p.double_data),
        DType::I64 => Tensor::from_slice(shape, &p.int64_data),
        DType::U64 => Tensor::from_slice(shape, &p.uint64_data),
        DType::U32 => Tensor::from_vec(shape, p.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::I32 => Tensor::from_slice(shape, &p.int32_data),
        DType::I16 => Tensor::from_vec(shape, p.int32_data.iter().map(|&v| v as i16).collect()),
        DType::U16 => Tensor::from_vec(shape, p.int32_data.iter().map(|&v| v as u16).collect()),
        DType::I8 => Tensor::from_vec(shape, p.int32_data.iter().map(|&v| v as i8).collect()),
        DType::U8 | DType::Bool => Tensor::from_bytes(
            dtype,
            shape,
            &p.int32_data.iter().map(|&v| v as u8).collect::<Vec<_>>(),
        ),
        DType::F16 => Tensor::from_vec(
            shape,
            p.int32_data
                .iter()
                .map(|&v| metal_mps_ir::f16::from_bits(v as u16))
                .collect(),
        ),
        DType::BF16 => Tensor::from_vec(
            shape,
            p.int32_data
                .iter()
                .map(|&v| metal_mps_ir::bf16::from_bits(v as u16))
                .collect(),
        ),
        // FLOAT8 types: one element's bits per int32.
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0 => {
            Tensor::from_bytes(
                dtype,
                shape,
                &p.int32_data.iter().map(|&v| v as u8).collect::<Vec<_>>(),
            )
        }
        // Handled by convert_strings and convert_packed above.
        DType::String => Err(Error::InvalidModel("STRING data is in string_data".into())),
        DType::F4E2M1 | DType::I4 | DType::U4 | DType::I2 | DType::U2 => Err(Error::InvalidModel(
            format!("{dtype} data must be unpacked"),
        )),
    }
}

/// STRING tensors: one `string_data` entry per element (ONNX keeps no raw or
/// external data for them).
fn convert_strings(p: &TensorProto, shape: Vec<usize>) -> Result<Tensor> {
    if p.raw_data.is_some() || p.data_location == Some(1) {
        return Err(Error::InvalidModel(
            "STRING tensors keep their elements in string_data, not raw or external data".into(),
        ));
    }
    let n = metal_mps_ir::checked_numel(&shape)?;
    if p.string_data.len() != n {
        return Err(Error::InvalidModel(format!(
            "declares STRING {:?} ({n} elements) but holds {} strings",
            p.dims,
            p.string_data.len()
        )));
    }
    Tensor::from_strings(shape, p.string_data.clone())
}

/// INT4/UINT4/FLOAT4E2M1 (two per byte) and INT2/UINT2 (four per byte), low
/// bits first, in `raw_data`, external data or `int32_data` (one packed byte per
/// int32); unpacked to one byte per element (signed types sign-extended).
fn convert_packed(
    p: &TensorProto,
    base_dir: Option<&Path>,
    dtype: DType,
    shape: Vec<usize>,
    numel: usize,
    bits: usize,
) -> Result<Tensor> {
    let per_byte = 8 / bits;
    let packed = numel.div_ceil(per_byte);
    let data = if p.data_location == Some(1) {
        read_external(p, base_dir, packed)?
    } else if let Some(raw) = &p.raw_data {
        raw.clone()
    } else {
        p.int32_data.iter().map(|&v| v as u8).collect()
    };
    if data.len() != packed {
        return Err(Error::InvalidModel(format!(
            "declares {dtype} {:?} ({packed} packed bytes) but holds {} bytes of data",
            p.dims,
            data.len()
        )));
    }
    Tensor::from_bytes(dtype, shape, &unpack(&data, dtype, numel, bits))
}

/// One byte per element from `bits`-bit fields, low bits first; INT4/INT2 are
/// sign-extended.
pub fn unpack(data: &[u8], dtype: DType, numel: usize, bits: usize) -> Vec<u8> {
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    let signed = matches!(dtype, DType::I4 | DType::I2);
    (0..numel)
        .map(|i| {
            let v = (data[i / per_byte] >> ((i % per_byte) * bits)) & mask;
            if signed {
                (((v << (8 - bits)) as i8) >> (8 - bits)) as u8
            } else {
                v
            }
        })
        .collect()
}

/// The packed bytes of one-byte-per-element sub-byte values (the inverse of
/// [`unpack`]), as a TensorProto's `raw_data` holds them.
pub fn pack(elems: &[u8], bits: usize) -> Vec<u8> {
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    let mut out = vec![0u8; elems.len().div_ceil(per_byte)];
    for (i, &v) in elems.iter().enumerate() {
        out[i / per_byte] |= (v & mask) << ((i % per_byte) * bits);
    }
    out
}

/// Bytes of data the proto carries inline, in our element size.
fn available_bytes(p: &TensorProto, dtype: DType) -> usize {
    if let Some(raw) = &p.raw_data {
        return raw.len();
    }
    let n = match dtype {
        DType::F32 => p.float_data.len(),
        DType::F64 => p.double_data.len(),
        DType::I64 => p.int64_data.len(),
        DType::U32 | DType::U64 => p.uint64_data.len(),
        _ => p.int32_data.len(),
    };
    n.saturating_mul(dtype.size())
}

fn read_external(p: &TensorProto, base_dir: Option<&Path>, bytes: usize) -> Result<Vec<u8>> {
    let field = |k: &str| {
        p.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    };
    let location = field("location")
        .ok_or_else(|| Error::InvalidModel("external data without a location".into()))?;
    let dir = base_dir
        .ok_or_else(|| Error::InvalidModel("external data needs the model's directory".into()))?;
    // One message for every refusal: it must not tell whether a path outside exists.
    let path = metal_mps_ir::resolve_within(dir, Path::new(&location)).ok_or_else(|| {
        Error::InvalidModel(format!(
            "external data location '{location}' must name a readable file inside the model's \
             folder (links and '..' included; nothing outside the model's folder is read)"
        ))
    })?;
    let offset: u64 = field("offset")
        .map(|s| s.parse())
        .transpose()
        .map_err(|_| Error::InvalidModel("bad external data offset".into()))?
        .unwrap_or(0);
    let length: Option<usize> = field("length")
        .map(|s| s.parse())
        .transpose()
        .map_err(|_| Error::InvalidModel("bad external data length".into()))?;
    if let Some(l) = length {
        if l != bytes {
            return Err(Error::InvalidModel(format!(
                "external data length {l} but the tensor needs {bytes} bytes"
            )));
        }
    }
    use std::io::{Read, Seek, SeekFrom};
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    if offset
        .checked_add(bytes as u64)
        .is_none_or(|end| end > file_len)
    {
        return Err(Error::InvalidModel(format!(
            "external data file '{location}' has {file_len} bytes; the tensor needs {bytes} at offset {offset}"
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    metal_mps_ir::limits::check_tensor_bytes(bytes)?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(bytes)
        .map_err(|_| Error::OutOfMemory { bytes })?;
    buf.resize(bytes, 0);
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
