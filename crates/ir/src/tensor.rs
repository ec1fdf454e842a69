//! Dense, row-major tensors with byte storage reusable across dtypes.

use crate::{DType, Element, Error, Result};
use std::fmt;
use std::sync::Arc;

/// Bytes that live outside metal_mps (a caller's array), read in place by
/// [`Tensor::from_shared`]. The owner keeps them alive and unchanged for as
/// long as the value exists.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Bytes of one tensor, aligned to a cache line: every [`Element`] can view
/// them, and kernels that read 64-byte rows of floats touch one line per row.
///
/// Storage is reused by the executors' memory plans: [`Storage::reset`] keeps the
/// capacity and changes the length, so a buffer that once held a large
/// intermediate can hold a smaller one, and then a large one again, without
/// reallocating or clearing.
///
/// A storage may instead read bytes owned elsewhere ([`SharedBytes`], from
/// [`Tensor::from_shared`]): an input handed over without a copy. Writing to
/// it, resizing it or cloning it first copies them into its own lines.
#[derive(Default)]
pub struct Storage {
    /// Initialized up to the largest length this storage has held.
    lines: Vec<Line>,
    len: usize,
    shared: Option<SharedBytes>,
}

/// One cache line of storage.
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct Line([u64; 8]);

const LINE: usize = std::mem::size_of::<Line>();

impl Clone for Storage {
    /// An owned copy: a clone never keeps a caller's shared bytes alive.
    fn clone(&self) -> Storage {
        if self.shared.is_some() {
            let mut copy = Storage::zeroed(self.len).expect("a copy of live bytes fits in memory");
            copy.as_bytes_mut().copy_from_slice(self.as_bytes());
            return copy;
        }
        Storage {
            lines: self.lines[..self.len.div_ceil(LINE)].to_vec(),
            len: self.len,
            shared: None,
        }
    }
}

impl Storage {
    /// Storage of `len` zero bytes. Fails instead of aborting when the allocation
    /// cannot be made.
    pub fn zeroed(len: usize) -> Result<Storage> {
        let mut s = Storage::default();
        s.reset(len)?;
        Ok(s)
    }

    /// Resizes to `len` bytes. Bytes within the largest length held so far
    /// keep what they held (callers overwrite them); bytes beyond it are zero.
    /// Fails when `len` exceeds [`crate::limits::max_tensor_bytes`] or the
    /// allocation cannot be made.
    pub fn reset(&mut self, len: usize) -> Result<()> {
        self.shared = None;
        let lines = len.div_ceil(LINE);
        if lines > self.lines.len() {
            crate::limits::check_tensor_bytes(len)?;
        }
        if self.lines.capacity() == 0 && lines > 0 {
            // Probe that the allocation can be made, then take zeroed pages
            // from the allocator (no memset of a large fresh buffer).
            Vec::<Line>::new()
                .try_reserve_exact(lines)
                .map_err(|_| Error::OutOfMemory { bytes: len })?;
            self.lines = bytemuck::zeroed_vec(lines);
        } else if lines > self.lines.len() {
            self.lines
                .try_reserve(lines - self.lines.len())
                .map_err(|_| Error::OutOfMemory { bytes: len })?;
            self.lines.resize(lines, bytemuck::Zeroable::zeroed());
        }
        self.len = len;
        Ok(())
    }

    pub fn capacity_bytes(&self) -> usize {
        self.lines.capacity() * LINE
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.shared {
            Some(bytes) => &(**bytes).as_ref()[..self.len],
            None => &bytemuck::cast_slice(&self.lines)[..self.len],
        }
    }

    /// The bytes, writable: shared bytes are copied into owned lines first.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        if let Some(shared) = self.shared.take() {
            let len = self.len;
            self.reset(len)
                .expect("a copy of live bytes fits in memory");
            bytemuck::cast_slice_mut(&mut self.lines)[..len]
                .copy_from_slice(&(*shared).as_ref()[..len]);
        }
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// A dense row-major tensor: dtype, shape and bytes.
///
/// A STRING tensor keeps its elements, byte strings in row-major order, in
/// `strings`; its byte storage is empty.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
    strings: Vec<Vec<u8>>,
}

/// Element count of a shape, or an error when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::TooLarge(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })
}

/// Bytes needed for a tensor of this dtype and shape, or an error when they overflow.
pub fn checked_bytes(dtype: DType, shape: &[usize]) -> Result<usize> {
    checked_numel(shape)?
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::TooLarge(format!("a {dtype} tensor of shape {shape:?} is too large")))
}

/// `numel` empty strings for a STRING tensor, nothing for other dtypes.
fn empty_strings(dtype: DType, shape: &[usize]) -> Result<Vec<Vec<u8>>> {
    if dtype != DType::String {
        return Ok(Vec::new());
    }
    let n = checked_numel(shape)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory { bytes: n * 24 })?;
    v.resize(n, Vec::new());
    Ok(v)
}

impl Tensor {
    /// A zero-filled tensor (empty strings for STRING).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let bytes = checked_bytes(dtype, &shape)?;
        Ok(Tensor {
            strings: empty_strings(dtype, &shape)?,
            dtype,
            shape,
            storage: Storage::zeroed(bytes)?,
        })
    }

    /// A STRING tensor holding `data` in row-major order.
    pub fn from_strings(shape: Vec<usize>, data: Vec<Vec<u8>>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::Invalid(format!(
                "shape {shape:?} holds {n} elements but {} strings were given",
                data.len()
            )));
        }
        Ok(Tensor {
            dtype: DType::String,
            shape,
            storage: Storage::default(),
            strings: data,
        })
    }

    /// The elements of a STRING tensor; fails for other dtypes.
    pub fn as_strings(&self) -> Result<&[Vec<u8>]> {
        self.check_string()?;
        Ok(&self.strings)
    }

    pub fn as_strings_mut(&mut self) -> Result<&mut [Vec<u8>]> {
        self.check_string()?;
        Ok(&mut self.strings)
    }

    /// The elements of a STRING tensor, taken out of it.
    pub fn into_strings(self) -> Result<Vec<Vec<u8>>> {
        self.check_string()?;
        Ok(self.strings)
    }

    fn check_string(&self) -> Result<()> {
        if self.dtype != DType::String {
            return Err(Error::Invalid(format!(
                "tensor holds {}, not STRING",
                self.dtype
            )));
        }
        Ok(())
    }

    /// A tensor built in `storage`, whose capacity is reused. Its contents are
    /// unspecified: the caller writes every element.
    pub fn in_storage(dtype: DType, shape: Vec<usize>, mut storage: Storage) -> Result<Tensor> {
        storage.reset(checked_bytes(dtype, &shape)?)?;
        Ok(Tensor {
            strings: empty_strings(dtype, &shape)?,
            dtype,
            shape,
            storage,
        })
    }

    /// A tensor holding `data` in row-major order.
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        Tensor::from_slice(shape, &data)
    }

    pub fn from_slice<T: Element>(shape: Vec<usize>, data: &[T]) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::Invalid(format!(
                "shape {shape:?} holds {n} elements but {} were given",
                data.len()
            )));
        }
        Tensor::from_bytes(T::DTYPE, shape, bytemuck::cast_slice(data))
    }

    /// A tensor from little-endian bytes, as KServe's binary extension and
    /// ONNX's `raw_data` carry them.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
        let need = checked_bytes(dtype, &shape)?;
        if need != bytes.len() {
            return Err(Error::Invalid(format!(
                "a {dtype} tensor of shape {shape:?} needs {need} bytes but {} were given",
                bytes.len()
            )));
        }
        if dtype == DType::String {
            return Err(Error::Invalid(
                "STRING tensors are not built from bytes (see Tensor::from_strings)".into(),
            ));
        }
        let mut storage = Storage::zeroed(need)?;
        storage.as_bytes_mut().copy_from_slice(bytes);
        Ok(Tensor {
            strings: Vec::new(),
            dtype,
            shape,
            storage,
        })
    }

    /// A tensor reading `bytes` in place, without a copy (a caller's input
    /// array). The bytes must be `dtype`'s little-endian elements in row-major
    /// order, aligned to the element size; writing to the tensor copies them.
    pub fn from_shared(dtype: DType, shape: Vec<usize>, bytes: SharedBytes) -> Result<Tensor> {
        if dtype == DType::String {
            return Err(Error::Invalid(
                "STRING tensors hold strings, not shared bytes".into(),
            ));
        }
        let need = checked_bytes(dtype, &shape)?;
        let view = (*bytes).as_ref();
        if need != view.len() {
            return Err(Error::Invalid(format!(
                "a {dtype} tensor of shape {shape:?} needs {need} bytes but {} were given",
                view.len()
            )));
        }
        if view.as_ptr().align_offset(dtype.size().max(1)) != 0 {
            return Err(Error::Invalid(format!(
                "{dtype} data must be aligned to {} bytes",
                dtype.size()
            )));
        }
        Ok(Tensor {
            dtype,
            shape,
            storage: Storage {
                lines: Vec::new(),
                len: need,
                shared: Some(bytes),
            },
            strings: Vec::new(),
        })
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_slice(vec![], &[v]).expect("one element fits")
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.storage.as_bytes()
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.storage.as_bytes_mut()
    }

    /// Gives the storage back for reuse.
    pub fn into_storage(self) -> Storage {
        self.storage
    }

    /// Typed view; fails when `T` is not this tensor's dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype::<T>()?;
        Ok(bytemuck::cast_slice(self.storage.as_bytes()))
    }

    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype::<T>()?;
        Ok(bytemuck::cast_slice_mut(self.storage.as_bytes_mut()))
    }

    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.as_slice::<T>()?.to_vec())
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor> {
        if checked_numel(&shape)? != self.numel() {
            return Err(Error::Invalid(format!(
                "cannot reshape {:?} into {shape:?}: element counts differ",
                self.shape
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Every element converted to f64, whatever the dtype (for comparisons and
    /// reports); STRING elements are NaN.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        if self.dtype == DType::String {
            return vec![f64::NAN; self.strings.len()];
        }
        crate::dispatch_dtype!(self.dtype, T => {
            let s: &[T] = bytemuck::cast_slice(self.storage.as_bytes());
            s.iter().map(|v| v.to_f64()).collect()
        })
    }

    /// The values as i64, for shape-like inputs (axes, pads, shapes, indices).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if !self.dtype.is_int() {
            return Err(Error::Invalid(format!(
                "expected an integer tensor, got {}",
                self.dtype
            )));
        }
        Ok(crate::dispatch_dtype!(self.dtype, T => {
            let s: &[T] = bytemuck::cast_slice(self.storage.as_bytes());
            s.iter().map(|v| v.to_i64()).collect()
        }))
    }

    /// The values as f64, when the tensor holds one element (scalars like Clip's bounds).
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::Invalid(format!(
                "expected one element, got shape {:?}",
                self.shape
            )));
        }
        Ok(self.to_f64_vec()[0])
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::Invalid(format!(
                "tensor holds {}, not {}",
                self.dtype,
                T::DTYPE
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}", self.dtype, self.shape)?;
        if self.dtype == DType::String {
            if self.strings.len() <= 8 {
                let v: Vec<_> = self
                    .strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect();
                write!(f, " {v:?}")?;
            }
            return write!(f, ")");
        }
        let v = self.to_f64_vec();
        if v.len() <= 8 {
            write!(f, " {v:?}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_are_read_in_place_and_copied_on_write() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let shared: SharedBytes = Arc::new(data);
        let t = Tensor::from_shared(DType::F32, vec![3], shared.clone()).unwrap();
        assert_eq!(t.as_bytes().as_ptr(), (*shared).as_ref().as_ptr());
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.5, -2.0, 3.25]);

        let copy = t.clone();
        assert_ne!(copy.as_bytes().as_ptr(), t.as_bytes().as_ptr());
        let mut written = t;
        written.as_slice_mut::<f32>().unwrap()[0] = 9.0;
        assert_eq!(written.as_slice::<f32>().unwrap(), &[9.0, -2.0, 3.25]);
        assert_eq!(&(*shared).as_ref()[..4], &1.5f32.to_le_bytes());
        assert_eq!(copy.as_slice::<f32>().unwrap(), &[1.5, -2.0, 3.25]);
    }

    #[test]
    fn shared_bytes_of_the_wrong_length_or_alignment_are_refused() {
        let short: SharedBytes = Arc::new(vec![0u8; 7]);
        let err = Tensor::from_shared(DType::F32, vec![2], short).unwrap_err();
        assert!(err.to_string().contains("needs 8 bytes but 7"), "{err}");
        struct Offset(Vec<u64>);
        impl AsRef<[u8]> for Offset {
            fn as_ref(&self) -> &[u8] {
                &bytemuck::cast_slice(&self.0)[1..5]
            }
        }
        let odd: SharedBytes = Arc::new(Offset(vec![0; 1]));
        let err = Tensor::from_shared(DType::F32, vec![1], odd).unwrap_err();
        assert!(err.to_string().contains("aligned"), "{err}");
    }
}
