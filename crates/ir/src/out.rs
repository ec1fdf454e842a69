use crate::{DType, Result, Storage, Tensor};

/// Where a kernel gets its output buffers: the storage of the plan's slots
/// (reused from earlier steps and runs), or fresh allocations.
pub struct Out {
    storages: Vec<Storage>,
}

impl Out {
    /// Every output freshly allocated.
    pub fn fresh() -> Out {
        Out {
            storages: Vec::new(),
        }
    }

    /// Output `i` is built in `storages[i]` (capacity reused).
    pub fn reusing(storages: Vec<Storage>) -> Out {
        Out { storages }
    }

    /// The buffer for output `i`; its contents are unspecified and must all be written.
    pub fn tensor(&mut self, i: usize, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let storage = self
            .storages
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default();
        Tensor::in_storage(dtype, shape, storage)
    }

    /// A copy of `src` with a new shape (layout ops).
    pub fn copy_of(&mut self, i: usize, src: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
        if src.dtype() == DType::String {
            return Tensor::from_strings(shape, src.as_strings()?.to_vec());
        }
        let mut t = self.tensor(i, src.dtype(), shape)?;
        if t.as_bytes().len() != src.as_bytes().len() {
            return crate::invalid!(
                "cannot view {:?} as {:?}: element counts differ",
                src.shape(),
                t.shape()
            );
        }
        t.as_bytes_mut().copy_from_slice(src.as_bytes());
        Ok(t)
    }
}
