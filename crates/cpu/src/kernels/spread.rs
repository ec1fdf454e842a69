//! Where the parallel loops of kernels (here and in `metal-mps-ops`) run: on
//! the thread pool, or all on the calling thread for a run too small to hand
//! to the pool (see `CpuPlan::run_fed`).

use rayon::iter::{IndexedParallelIterator, MinLen};
use std::cell::Cell;

thread_local! {
    static ON_CALLER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`Spread::spread`] loop it starts kept on this thread.
pub(crate) fn on_caller<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag however `f` ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_CALLER.set(self.0);
        }
    }
    let _restore = Restore(ON_CALLER.replace(true));
    f()
}

/// A parallel loop that stays on the calling thread inside [`on_caller`].
/// Rayon would otherwise hand a loop started outside the pool to a worker
/// and block until it is done: ~15 µs per loop on a virtual machine, for
/// kernels that take 1 µs.
pub trait Spread: IndexedParallelIterator {
    fn spread(self) -> MinLen<Self> {
        // A loop that may not be split runs on the thread that started it.
        self.with_min_len(match ON_CALLER.get() {
            true => usize::MAX,
            false => 1,
        })
    }
}

impl<I: IndexedParallelIterator> Spread for I {}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The pool threads among those that ran the items of a spread loop.
    fn pool_threads() -> Vec<Option<usize>> {
        let ran = std::sync::Mutex::new(Vec::new());
        (0..256).into_par_iter().spread().for_each(|_| {
            ran.lock().unwrap().push(rayon::current_thread_index());
        });
        ran.into_inner().unwrap()
    }

    #[test]
    fn loops_stay_on_the_caller_only_inside_on_caller() {
        assert!(on_caller(pool_threads).iter().all(Option::is_none));
        // Outside, rayon hands the loop to its pool, as before.
        assert!(pool_threads().iter().all(Option::is_some));
        // The flag is restored after a panic too.
        let _ = std::panic::catch_unwind(|| on_caller(|| panic!("a kernel failed")));
        assert!(pool_threads().iter().all(Option::is_some));
    }
}
