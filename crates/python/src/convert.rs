//! numpy arrays ⇄ engine tensors.
//!
//! Inputs are read in place: a C-contiguous, aligned, native-endian array
//! becomes a tensor over the array's own memory (the tensor holds a reference
//! to the array, so it stays alive); any other array-like is made contiguous
//! by numpy first. Outputs are copied once into new arrays.
//!
//! dtypes: numpy's bool, integers, float16/32/64; bfloat16, the float8 and
//! the 4- and 2-bit types as `ml_dtypes` defines them (what onnx's
//! `numpy_helper` returns).

use crate::errors::InvalidArgument;
use metal_mps::{DType, SharedBytes, Tensor};
use numpy::{
    npyffi, Element, PyArray, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;
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
/// `numpy.asarray` accepts).
pub fn tensor_from_py(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let py = value.py();
    let array = match value.cast::<PyUntypedArray>() {
        Ok(a) if readable_in_place(a) => a.clone(),
        _ => {
            let numpy = py.import("numpy")?;
            // Not `ascontiguousarray`: it turns a 0-d array or numpy scalar into shape (1,).
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("order", "C")?;
            let contiguous = numpy.call_method("asarray", (value,), Some(&kwargs))?;
            let contiguous = contiguous.cast_into::<PyUntypedArray>()?;
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
    let bytes: SharedBytes = Arc::new(ArrayBytes {
        _array: array.into_any().unbind(),
        data,
        len,
    });
    Tensor::from_shared(dtype, shape, bytes)
        .map_err(|e| InvalidArgument::new_err(format!("input '{name}': {e}")))
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
