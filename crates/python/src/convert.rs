//! numpy arrays ⇄ engine tensors.
//!
//! Inputs are read in place: a C-contiguous, aligned, native-endian array
//! becomes a tensor over the array's own memory (the tensor holds a reference
//! to the array, so it stays alive); any other array-like is made contiguous
//! by numpy first. Outputs are copied once into new arrays.
//!
//! dtypes: numpy's bool, integers, float16/32/64; bfloat16, the float8 and
//! the 4- and 2-bit types as `ml_dtypes` defines them (what onnx's
//! `numpy_helper` returns). `ml_dtypes` keeps an int4/int2 element in the low
//! bits of its byte; the engine sign-extends it to the whole byte, so these
//! are converted both ways (a copy, not an in-place read).
//!
//! STRING tensors: an input is a numpy array of text (`'U'`), bytes (`'S'`)
//! or objects that are all `str` or `bytes` (text is encoded as UTF-8); an
//! output is a numpy object array of `str` (as onnxruntime returns), with an
//! element that is not valid UTF-8 given as `bytes`.
//!
//! Sequences and optionals ([`datum_from_py`], [`datum_to_py`]): a sequence is
//! a Python list (or tuple) of arrays, an optional is `None` or its value, as
//! in onnxruntime's Python API.

use crate::errors::InvalidArgument;
use metal_mps::{DType, Datum, Kind, SharedBytes, Tensor};
use numpy::{
    npyffi, Element, PyArray, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyAnyMethods, PyBytes, PyList, PyString, PyTuple};
use std::sync::Arc;

/// An array's memory, borrowed for as long as a tensor reads it.
struct ArrayBytes {
    /// Keeps the array (and so its data) alive.
    _array: Py<PyAny>,
    data: *const u8,
    len: usize,
}

// SAFETY: the bytes belong to `_array`, which this value keeps alive; the
// engine only reads them (a write copies them first). As with onnxruntime,
// another Python thread must not write to an array while a run reads it.
unsafe impl Send for ArrayBytes {}
unsafe impl Sync for ArrayBytes {}

impl AsRef<[u8]> for ArrayBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `data` points at `len` bytes of the live array (see above).
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// The tensor for input `name` from `value` (a numpy array or anything
/// `numpy.asarray` accepts). Text, bytes and object arrays become STRING
/// tensors; `None`, a ragged list or an object array holding anything but
/// `str`/`bytes` is refused with [`InvalidArgument`].
pub fn tensor_from_py(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let py = value.py();
    if value.is_none() {
        return Err(InvalidArgument::new_err(format!(
            "input '{name}' is a tensor: None is only accepted for an optional input"
        )));
    }
    let array = match value.cast::<PyUntypedArray>() {
        Ok(a) if readable_in_place(a) || is_text(a) => a.clone(),
        _ => {
            let numpy = py.import("numpy")?;
            // Not `ascontiguousarray`: it turns a 0-d array or numpy scalar into shape (1,).
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("order", "C")?;
            let contiguous = numpy
                .call_method("asarray", (value,), Some(&kwargs))
                .map_err(|e| {
                    let what = if value.is_instance_of::<PyList>()
                        || value.is_instance_of::<PyTuple>()
                    {
                        "a list that is not a rectangular array of numbers or strings (a ragged \
                         list, or a list of arrays of different shapes: a sequence input takes a \
                         list of arrays, a tensor input one array)"
                            .to_string()
                    } else {
                        format!("a {}", type_name(value))
                    };
                    InvalidArgument::new_err(format!(
                        "input '{name}' is a tensor and cannot be made from {what}: {}",
                        e.value(py)
                    ))
                })?;
            let contiguous = contiguous.cast_into::<PyUntypedArray>()?;
            if is_text(&contiguous) {
                return strings_from_py(name, &contiguous);
            }
            if !readable_in_place(&contiguous) {
                // A non-native byte order, or unaligned memory (an array over a buffer at an
                // odd offset), survives asarray: a native copy has neither.
                let native = contiguous.dtype().call_method1("newbyteorder", ("=",))?;
                let converted =
                    contiguous.call_method1("astype", (native, "C", "unsafe", true, true))?;
                converted.cast_into::<PyUntypedArray>()?
            } else {
                contiguous
            }
        }
    };
    if is_text(&array) {
        return strings_from_py(name, &array);
    }
    let descr = array.dtype();
    let dtype = dtype_of(&descr).ok_or_else(|| {
        InvalidArgument::new_err(format!(
            "input '{name}': numpy dtype {} has no ONNX tensor type metal_mps runs",
            descr.str().map(|s| s.to_string()).unwrap_or_default()
        ))
    })?;
    let shape = array.shape().to_vec();
    let len = array.len() * descr.itemsize();
    if len == 0 {
        // Nothing to share, and an empty array's pointer need not be aligned.
        return Tensor::zeros(dtype, shape)
            .map_err(|e| InvalidArgument::new_err(format!("input '{name}': {e}")));
    }
    // SAFETY: a live ndarray's `data` points at its elements.
    let data = unsafe { (*array.as_array_ptr()).fields.data as *const u8 };
    if let Some(bits) = signed_bits(dtype) {
        // SAFETY: `data` points at the array's `len` bytes; the array is alive here.
        let raw = unsafe { std::slice::from_raw_parts(data, len) };
        let shift = 8 - bits;
        let extended: Vec<u8> = raw
            .iter()
            .map(|&b| (((b << shift) as i8) >> shift) as u8)
            .collect();
        return Tensor::from_bytes(dtype, shape, &extended)
            .map_err(|e| InvalidArgument::new_err(format!("input '{name}': {e}")));
    }
    let bytes: SharedBytes = Arc::new(ArrayBytes {
        _array: array.into_any().unbind(),
        data,
        len,
    });
    Tensor::from_shared(dtype, shape, bytes)
        .map_err(|e| InvalidArgument::new_err(format!("input '{name}': {e}")))
}

/// The width of a signed small integer type that `ml_dtypes` stores in the
/// low bits of a byte and the engine sign-extended.
fn signed_bits(dtype: DType) -> Option<u32> {
    match dtype {
        DType::I4 => Some(4),
        DType::I2 => Some(2),
        _ => None,
    }
}

/// A numpy array of text (`'U'`), bytes (`'S'`) or objects (`'O'`): a STRING tensor.
fn is_text(a: &Bound<'_, PyUntypedArray>) -> bool {
    matches!(a.dtype().kind(), b'U' | b'S' | b'O')
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A STRING tensor from a text, bytes or object array (every object a `str` or `bytes`).
fn strings_from_py(name: &str, array: &Bound<'_, PyUntypedArray>) -> PyResult<Tensor> {
    let shape = array.shape().to_vec();
    let flat = array
        .call_method1("reshape", (-1,))?
        .call_method0("tolist")?;
    let flat = flat.cast_into::<PyList>()?;
    let mut data = Vec::with_capacity(flat.len());
    for (i, item) in flat.iter().enumerate() {
        if let Ok(s) = item.cast::<PyString>() {
            data.push(s.to_cow()?.as_bytes().to_vec());
        } else if let Ok(b) = item.cast::<PyBytes>() {
            data.push(b.as_bytes().to_vec());
        } else {
            return Err(InvalidArgument::new_err(format!(
                "input '{name}': an object array is a STRING tensor and must hold only str or \
                 bytes, but element {i} (in row-major order) is a {}",
                type_name(&item)
            )));
        }
    }
    Tensor::from_strings(shape, data)
        .map_err(|e| InvalidArgument::new_err(format!("input '{name}': {e}")))
}

/// The value of input `name`, declared of `kind`: a tensor as
/// [`tensor_from_py`] takes it, a sequence as a list or tuple of them, an
/// optional as `None` (no value) or a value of its inner kind.
pub fn datum_from_py(name: &str, value: &Bound<'_, PyAny>, kind: &Kind) -> PyResult<Datum> {
    match kind {
        Kind::Tensor => tensor_from_py(name, value).map(Datum::Tensor),
        Kind::Sequence => {
            let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = value.cast::<PyList>() {
                l.iter().collect()
            } else if let Ok(t) = value.cast::<PyTuple>() {
                t.iter().collect()
            } else {
                return Err(InvalidArgument::new_err(format!(
                    "input '{name}' is a sequence of tensors: give a list of numpy arrays, not a {}",
                    if value.is_none() {
                        "None".to_string()
                    } else {
                        type_name(value)
                    }
                )));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| tensor_from_py(&format!("{name}[{i}]"), item))
                .collect::<PyResult<Vec<_>>>()
                .map(Datum::Sequence)
        }
        Kind::Optional(inner) => {
            if value.is_none() {
                Ok(Datum::Optional(None))
            } else {
                Ok(Datum::Optional(Some(Box::new(datum_from_py(
                    name, value, inner,
                )?))))
            }
        }
    }
}

/// A run's value for Python: a tensor as [`tensor_to_py`] makes it, a
/// sequence as a list of arrays, an optional as `None` or its value.
pub fn datum_to_py<'py>(py: Python<'py>, d: &Datum) -> PyResult<Bound<'py, PyAny>> {
    match d {
        Datum::Tensor(t) => tensor_to_py(py, t),
        Datum::Sequence(ts) => {
            let items = ts
                .iter()
                .map(|t| tensor_to_py(py, t))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        }
        Datum::Optional(None) => Ok(py.None().into_bound(py)),
        Datum::Optional(Some(v)) => datum_to_py(py, v),
    }
}

/// C-contiguous, aligned and in the machine's byte order.
fn readable_in_place(a: &Bound<'_, PyUntypedArray>) -> bool {
    // SAFETY: reading the flags of a live ndarray.
    let flags = unsafe { (*a.as_array_ptr()).fields.flags };
    let aligned = flags & npyffi::flags::NPY_ARRAY_ALIGNED != 0;
    let native = !matches!(a.dtype().byteorder(), b'>' if cfg!(target_endian = "little"))
        && !matches!(a.dtype().byteorder(), b'<' if cfg!(target_endian = "big"));
    a.is_c_contiguous() && aligned && native
}

/// The names `ml_dtypes` gives the types numpy lacks.
const ML_DTYPES: [(&str, DType); 10] = [
    ("bfloat16", DType::BF16),
    ("float8_e4m3fn", DType::F8E4M3FN),
    ("float8_e4m3fnuz", DType::F8E4M3FNUZ),
    ("float8_e5m2", DType::F8E5M2),
    ("float8_e5m2fnuz", DType::F8E5M2FNUZ),
    ("float8_e8m0fnu", DType::F8E8M0),
    ("float4_e2m1fn", DType::F4E2M1),
    ("int4", DType::I4),
    ("uint4", DType::U4),
    ("int2", DType::I2),
];

fn dtype_of(d: &Bound<'_, PyArrayDescr>) -> Option<DType> {
    let size = d.itemsize();
    Some(match (d.kind(), size) {
        (b'b', 1) => DType::Bool,
        (b'f', 2) => DType::F16,
        (b'f', 4) => DType::F32,
        (b'f', 8) => DType::F64,
        (b'i', 1) => DType::I8,
        (b'i', 2) => DType::I16,
        (b'i', 4) => DType::I32,
        (b'i', 8) => DType::I64,
        (b'u', 1) => DType::U8,
        (b'u', 2) => DType::U16,
        (b'u', 4) => DType::U32,
        (b'u', 8) => DType::U64,
        _ => {
            let name = d.getattr("name").ok()?.extract::<String>().ok()?;
            if name == "uint2" {
                return Some(DType::U2);
            }
            ML_DTYPES.iter().find(|(n, _)| *n == name)?.1
        }
    })
}

/// A new numpy array holding a copy of `t`.
pub fn tensor_to_py<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    Ok(match t.dtype() {
        DType::F32 => copy_out::<f32>(py, t)?,
        DType::F16 => copy_out::<half::f16>(py, t)?,
        DType::F64 => copy_out::<f64>(py, t)?,
        DType::I8 => copy_out::<i8>(py, t)?,
        DType::I16 => copy_out::<i16>(py, t)?,
        DType::I32 => copy_out::<i32>(py, t)?,
        DType::I64 => copy_out::<i64>(py, t)?,
        DType::U8 => copy_out::<u8>(py, t)?,
        DType::U16 => copy_out::<u16>(py, t)?,
        DType::U32 => copy_out::<u32>(py, t)?,
        DType::U64 => copy_out::<u64>(py, t)?,
        DType::String => strings_to_py(py, t)?,
        DType::Bool => {
            // The engine stores any non-zero byte as true; numpy's bool is 0 or 1.
            let array = copy_out::<bool>(py, t)?;
            let view = array.cast::<PyArrayDyn<bool>>()?;
            // SAFETY: the new array is not shared yet; its bytes are read as u8.
            let data = unsafe { std::slice::from_raw_parts_mut(view.data() as *mut u8, t.numel()) };
            data.iter_mut().for_each(|b| *b = (*b != 0) as u8);
            array
        }
        other => {
            // An ml_dtypes type: the bytes as unsigned integers of its size, viewed as it.
            let raw = match other.size() {
                1 => copy_out::<u8>(py, t)?,
                2 => copy_out::<u16>(py, t)?,
                n => unreachable!("no {n}-byte ml_dtypes type"),
            };
            if let Some(bits) = signed_bits(other) {
                // ml_dtypes keeps the element in the low bits, the others zero.
                let view = raw.cast::<PyArrayDyn<u8>>()?;
                // SAFETY: the new array is not shared yet; it holds `numel` bytes.
                let data = unsafe { std::slice::from_raw_parts_mut(view.data(), t.numel()) };
                let mask = (1u8 << bits) - 1;
                data.iter_mut().for_each(|b| *b &= mask);
            }
            let name = ml_dtypes_name(other);
            let ml = py.import("ml_dtypes").map_err(|_| {
                InvalidArgument::new_err(format!(
                    "a {other} output needs the ml_dtypes package (pip install ml_dtypes)"
                ))
            })?;
            let dtype = py
                .import("numpy")?
                .call_method1("dtype", (ml.getattr(name)?,))?;
            raw.call_method1("view", (dtype,))?
        }
    })
}

/// A STRING tensor as a numpy object array of `str` (`bytes` for an element
/// that is not UTF-8).
fn strings_to_py<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let items = t
        .as_strings()
        .map_err(|e| InvalidArgument::new_err(e.to_string()))?
        .iter()
        .map(|s| match std::str::from_utf8(s) {
            Ok(text) => Ok(PyString::new(py, text).into_any()),
            Err(_) => Ok(PyBytes::new(py, s).into_any()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    let numpy = py.import("numpy")?;
    // `empty` + assignment rather than `array(list)`: numpy never splits a str, but this
    // also keeps a list of one element from collapsing a shape such as (1, 1).
    let flat = numpy.call_method1("empty", (items.len(), numpy.getattr("object_")?))?;
    for (i, item) in items.into_iter().enumerate() {
        flat.set_item(i, item)?;
    }
    flat.call_method1("reshape", (PyTuple::new(py, t.shape())?,))
}

fn ml_dtypes_name(d: DType) -> &'static str {
    if d == DType::U2 {
        return "uint2";
    }
    ML_DTYPES
        .iter()
        .find(|(_, t)| *t == d)
        .map(|(n, _)| *n)
        .expect("every DType without a numpy type has an ml_dtypes name")
}

fn copy_out<'py, T: Element>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: every element is written below before the array is returned.
    let array: Bound<'py, PyArrayDyn<T>> = unsafe { PyArray::new(py, t.shape(), false) };
    let bytes = t.as_bytes();
    if !bytes.is_empty() {
        // SAFETY: a new C-contiguous array of `t.shape()` holds `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), array.data() as *mut u8, bytes.len());
        }
    }
    Ok(array.into_any())
}
