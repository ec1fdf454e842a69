//! The memory manager: device and staging buffers pooled by size bucket.
//!
//! Policy, as the spec describes it:
//! - sizes are rounded up to power-of-two buckets (at least [`MIN_BUCKET`]
//!   bytes), so a released buffer serves every later request of its bucket;
//! - a released buffer waits in its bucket's free list; one older than
//!   [`PoolConfig::max_age`] is freed (LRU-style aging);
//! - the bytes waiting in free lists never exceed [`PoolConfig::max_pool_bytes`]:
//!   the least recently released buffers go first;
//! - every operation is thread-safe and counted in [`PoolStats`].
//!
//! The pool is generic over an [`Allocator`] so that its policy is tested
//! without a device; [`BufferPool`] is the pool of `wgpu` buffers.

use metal_mps_ir::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Smallest bucket in bytes.
pub const MIN_BUCKET: u64 = 256;
/// Environment variable: most bytes kept in free lists (`1073741824`, `512M`, `2G`).
pub const MAX_POOL_SIZE_ENV: &str = "MPS_MAX_POOL_SIZE";
/// Environment variable: seconds a released buffer is kept (`30`, `0.5`, `250ms`).
pub const MAX_BUFFER_AGE_ENV: &str = "MPS_MAX_BUFFER_AGE";
/// Environment variable: `1` prints pool events and the device's capabilities to stderr.
pub const VERBOSE_ENV: &str = "MPS_VERBOSE";

/// What a buffer is used for; buffers of different classes never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferClass {
    /// Tensors on the device: storage, copy source and destination.
    Storage,
    /// Kernel parameters: uniform, copy destination.
    Uniform,
    /// Staging for downloads: mappable for reading, copy destination.
    Readback,
}

/// Pool settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Most bytes kept in free lists; beyond, the least recently released go.
    pub max_pool_bytes: u64,
    /// A buffer released longer ago than this is freed.
    pub max_age: Duration,
    /// Print pool events to stderr.
    pub verbose: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_pool_bytes: 1 << 30,
            max_age: Duration::from_secs(60),
            verbose: false,
        }
    }
}

impl PoolConfig {
    /// The defaults overridden by [`MAX_POOL_SIZE_ENV`], [`MAX_BUFFER_AGE_ENV`]
    /// and [`VERBOSE_ENV`]. A value that does not parse is reported on stderr and ignored.
    pub fn from_env() -> PoolConfig {
        let mut c = PoolConfig::default();
        if let Ok(v) = std::env::var(MAX_POOL_SIZE_ENV) {
            match parse_bytes(&v) {
                Some(b) => c.max_pool_bytes = b,
                None => eprintln!("[metal_mps gpu] ignoring {MAX_POOL_SIZE_ENV}={v:?}: expected bytes like 536870912, 512M or 2G"),
            }
        }
        if let Ok(v) = std::env::var(MAX_BUFFER_AGE_ENV) {
            match parse_duration(&v) {
                Some(d) => c.max_age = d,
                None => eprintln!("[metal_mps gpu] ignoring {MAX_BUFFER_AGE_ENV}={v:?}: expected seconds like 30, 0.5 or 250ms"),
            }
        }
        c.verbose =
            std::env::var(VERBOSE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        c
    }
}

use metal_mps_ir::units::{parse_bytes, parse_duration};

/// Counters of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created by the allocator.
    pub allocations: u64,
    /// Requests served from a free list.
    pub hits: u64,
    /// Requests that had to allocate.
    pub misses: u64,
    /// Bucket bytes of the buffers handed out and not yet returned.
    pub bytes_in_use: u64,
    /// Bytes waiting in free lists.
    pub bytes_pooled: u64,
    /// Buffers waiting in free lists.
    pub buffers_pooled: u64,
    /// Buffers freed by aging or by the cap.
    pub evictions: u64,
}

/// Creates the buffers a pool hands out.
pub trait Allocator: Send + Sync + 'static {
    type Buffer: Send + Sync + 'static;
    /// A new buffer of exactly `size` bytes.
    fn allocate(&self, class: BufferClass, size: u64) -> Result<Self::Buffer>;
    /// The largest buffer this allocator can make.
    fn max_size(&self) -> u64;
}

struct Entry<B> {
    buffer: B,
    size: u64,
    released: Instant,
}

struct State<B> {
    config: PoolConfig,
    free: HashMap<(BufferClass, u64), Vec<Entry<B>>>,
    stats: PoolStats,
    last_trim: Instant,
}

struct Shared<A: Allocator> {
    allocator: A,
    state: Mutex<State<A::Buffer>>,
}

/// A thread-safe pool of buffers; cloning shares it.
pub struct Pool<A: Allocator> {
    shared: Arc<Shared<A>>,
}

impl<A: Allocator> Clone for Pool<A> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

/// A buffer on loan from a [`Pool`]; it goes back to its bucket when dropped.
pub struct Pooled<A: Allocator> {
    buffer: Option<A::Buffer>,
    class: BufferClass,
    size: u64,
    pool: Arc<Shared<A>>,
}

impl<A: Allocator> Pooled<A> {
    /// The bucket size: the buffer's real size, at least what was asked for.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn class(&self) -> BufferClass {
        self.class
    }
}

impl<A: Allocator> std::ops::Deref for Pooled<A> {
    type Target = A::Buffer;
    fn deref(&self) -> &A::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until dropped")
    }
}

impl<A: Allocator> Drop for Pooled<A> {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            release(&self.pool, self.class, self.size, b, Instant::now());
        }
    }
}

fn lock<B>(m: &Mutex<State<B>>) -> MutexGuard<'_, State<B>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bucket a request of `size` bytes is served from.
pub fn bucket_size(size: u64, max: u64) -> u64 {
    let b = size
        .max(MIN_BUCKET)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    if b <= max {
        b
    } else {
        // Rounding up would pass the device's limit: an exact bucket (rounded to MIN_BUCKET).
        size.div_ceil(MIN_BUCKET) * MIN_BUCKET
    }
}

fn release<A: Allocator>(
    shared: &Shared<A>,
    class: BufferClass,
    size: u64,
    buffer: A::Buffer,
    now: Instant,
) {
    let mut st = lock(&shared.state);
    st.stats.bytes_in_use -= size;
    if size > st.config.max_pool_bytes {
        // Keeping it would push out everything else: free it at once.
        st.stats.evictions += 1;
        if st.config.verbose {
            eprintln!(
                "[metal_mps gpu] pool: freed a {size} byte buffer (larger than the pool cap)"
            );
        }
        return;
    }
    st.free.entry((class, size)).or_default().push(Entry {
        buffer,
        size,
        released: now,
    });
    st.stats.bytes_pooled += size;
    st.stats.buffers_pooled += 1;
    enforce_cap(&mut st);
    maybe_trim(&mut st, now);
}

/// Evicts the least recently released buffers until the cap holds.
fn enforce_cap<B>(st: &mut State<B>) {
    while st.stats.bytes_pooled > st.config.max_pool_bytes {
        let oldest = st
            .free
            .iter()
            .filter_map(|(k, v)| v.first().map(|e| (e.released, *k)))
            .min_by_key(|(t, _)| *t)
            .map(|(_, k)| k);
        let Some(key) = oldest else { break };
        let list = st.free.get_mut(&key).expect("key found above");
        let e = list.remove(0);
        if list.is_empty() {
            st.free.remove(&key);
        }
        evicted(st, &e, "over the pool cap");
    }
}

fn evicted<B>(st: &mut State<B>, e: &Entry<B>, why: &str) {
    st.stats.bytes_pooled -= e.size;
    st.stats.buffers_pooled -= 1;
    st.stats.evictions += 1;
    if st.config.verbose {
        eprintln!(
            "[metal_mps gpu] pool: freed a {} byte buffer ({why})",
            e.size
        );
    }
}

/// Trims aged buffers at most four times per `max_age`.
fn maybe_trim<B>(st: &mut State<B>, now: Instant) {
    if now.saturating_duration_since(st.last_trim) >= st.config.max_age / 4 {
        trim_locked(st, now);
    }
}

fn trim_locked<B>(st: &mut State<B>, now: Instant) {
    st.last_trim = now;
    let max_age = st.config.max_age;
    let mut gone = Vec::new();
    for list in st.free.values_mut() {
        // Lists are ordered by release time: aged entries are at the front.
        let n = list
            .iter()
            .take_while(|e| now.saturating_duration_since(e.released) > max_age)
            .count();
        gone.extend(list.drain(..n));
    }
    st.free.retain(|_, v| !v.is_empty());
    for e in &gone {
        evicted(st, e, "aged out");
    }
}

impl<A: Allocator> Pool<A> {
    pub fn with_allocator(allocator: A, config: PoolConfig) -> Self {
        let state = State {
            config,
            free: HashMap::new(),
            stats: PoolStats::default(),
            last_trim: Instant::now(),
        };
        Pool {
            shared: Arc::new(Shared {
                allocator,
                state: Mutex::new(state),
            }),
        }
    }

    /// A buffer of at least `size` bytes: the most recently released one of its
    /// bucket, or a new one.
    pub fn acquire(&self, class: BufferClass, size: u64) -> Result<Pooled<A>> {
        let max = self.shared.allocator.max_size();
        if size > max {
            return Err(Error::OutOfMemory {
                bytes: size as usize,
            });
        }
        let bucket = bucket_size(size, max);
        let reused = {
            let mut st = lock(&self.shared.state);
            let hit = st.free.get_mut(&(class, bucket)).and_then(|l| l.pop());
            if let Some(e) = &hit {
                st.stats.hits += 1;
                st.stats.bytes_pooled -= e.size;
                st.stats.buffers_pooled -= 1;
                if st.free.get(&(class, bucket)).is_some_and(Vec::is_empty) {
                    st.free.remove(&(class, bucket));
                }
            } else {
                st.stats.misses += 1;
            }
            st.stats.bytes_in_use += bucket;
            hit.map(|e| e.buffer)
        };
        let buffer = match reused {
            Some(b) => b,
            None => {
                let made = self.shared.allocator.allocate(class, bucket);
                let mut st = lock(&self.shared.state);
                match made {
                    Ok(b) => {
                        st.stats.allocations += 1;
                        if st.config.verbose {
                            eprintln!("[metal_mps gpu] pool: new {class:?} buffer of {bucket} bytes for {size}");
                        }
                        b
                    }
                    Err(e) => {
                        st.stats.bytes_in_use -= bucket;
                        return Err(e);
                    }
                }
            }
        };
        Ok(Pooled {
            buffer: Some(buffer),
            class,
            size: bucket,
            pool: self.shared.clone(),
        })
    }

    /// Frees every pooled buffer released longer ago than the configured age.
    pub fn trim(&self) {
        self.trim_at(Instant::now());
    }

    /// [`Pool::trim`] as if the time were `now` (tests age buffers without sleeping).
    pub fn trim_at(&self, now: Instant) {
        trim_locked(&mut lock(&self.shared.state), now);
    }

    /// Frees every pooled buffer.
    pub fn clear(&self) {
        let mut st = lock(&self.shared.state);
        let all: Vec<Entry<A::Buffer>> = st.free.drain().flat_map(|(_, v)| v).collect();
        for e in &all {
            evicted(&mut st, e, "pool cleared");
        }
    }

    pub fn stats(&self) -> PoolStats {
        lock(&self.shared.state).stats
    }

    pub fn config(&self) -> PoolConfig {
        lock(&self.shared.state).config.clone()
    }

    /// Changes the settings; a lower cap takes effect at once.
    pub fn set_config(&self, config: PoolConfig) {
        let mut st = lock(&self.shared.state);
        st.config = config;
        enforce_cap(&mut st);
    }
}

/// Makes `wgpu` buffers for the pool.
pub struct WgpuAllocator {
    device: wgpu::Device,
}

impl Allocator for WgpuAllocator {
    type Buffer = wgpu::Buffer;

    fn allocate(&self, class: BufferClass, size: u64) -> Result<wgpu::Buffer> {
        use wgpu::BufferUsages as U;
        let usage = match class {
            BufferClass::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferClass::Uniform => U::UNIFORM | U::COPY_DST,
            BufferClass::Readback => U::MAP_READ | U::COPY_DST,
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("metal_mps pooled"),
            size,
            usage,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            None => Ok(buffer),
            Some(_) => Err(Error::OutOfMemory {
                bytes: size as usize,
            }),
        }
    }

    fn max_size(&self) -> u64 {
        self.device.limits().max_buffer_size
    }
}

/// The pool of device and staging buffers of one [`crate::GpuContext`].
pub type BufferPool = Pool<WgpuAllocator>;
/// A `wgpu` buffer on loan from the [`BufferPool`].
pub type PooledBuffer = Pooled<WgpuAllocator>;

impl Pool<WgpuAllocator> {
    pub fn new(device: wgpu::Device, config: PoolConfig) -> Self {
        Pool::with_allocator(WgpuAllocator { device }, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Hands out numbered fake buffers.
    #[derive(Default)]
    struct Fake {
        made: AtomicU64,
    }

    impl Allocator for Fake {
        type Buffer = (u64, u64);
        fn allocate(&self, _: BufferClass, size: u64) -> Result<(u64, u64)> {
            Ok((self.made.fetch_add(1, Ordering::SeqCst), size))
        }
        fn max_size(&self) -> u64 {
            1 << 32
        }
    }

    fn pool(cap: u64, age: Duration) -> Pool<Fake> {
        Pool::with_allocator(
            Fake::default(),
            PoolConfig {
                max_pool_bytes: cap,
                max_age: age,
                verbose: false,
            },
        )
    }

    #[test]
    fn bucket_sizes_are_powers_of_two() {
        assert_eq!(bucket_size(0, 1 << 40), MIN_BUCKET);
        assert_eq!(bucket_size(1, 1 << 40), 256);
        assert_eq!(bucket_size(256, 1 << 40), 256);
        assert_eq!(bucket_size(257, 1 << 40), 512);
        assert_eq!(bucket_size(1_000_000, 1 << 40), 1 << 20);
        // Past the device's limit the bucket is exact.
        assert_eq!(bucket_size(600 << 20, 900 << 20), 600 << 20);
        let p = pool(1 << 30, Duration::from_secs(60));
        let b = p.acquire(BufferClass::Storage, 3000).unwrap();
        assert_eq!(b.size(), 4096);
        assert_eq!(b.1, 4096);
    }

    #[test]
    fn released_buffers_are_reused_within_their_bucket_and_class() {
        let p = pool(1 << 30, Duration::from_secs(60));
        let id = {
            let b = p.acquire(BufferClass::Storage, 1000).unwrap();
            assert_eq!(p.stats().bytes_in_use, 1024);
            b.0
        };
        let s = p.stats();
        assert_eq!(
            (s.bytes_in_use, s.bytes_pooled, s.buffers_pooled),
            (0, 1024, 1)
        );
        // Same bucket: the same buffer.
        let again = p.acquire(BufferClass::Storage, 600).unwrap();
        assert_eq!(again.0, id);
        // Another class or bucket: a new one.
        let other = p.acquire(BufferClass::Readback, 600).unwrap();
        let bigger = p.acquire(BufferClass::Storage, 2000).unwrap();
        assert_ne!(other.0, id);
        assert_ne!(bigger.0, id);
        let s = p.stats();
        assert_eq!((s.allocations, s.hits, s.misses), (3, 1, 3));
        assert_eq!(s.bytes_in_use, 1024 + 1024 + 2048);
    }

    #[test]
    fn aged_buffers_are_evicted() {
        let age = Duration::from_secs(10);
        let p = pool(1 << 30, age);
        drop(p.acquire(BufferClass::Storage, 100).unwrap());
        let t = Instant::now();
        p.trim_at(t);
        assert_eq!(p.stats().buffers_pooled, 1, "young buffers stay");
        p.trim_at(t + age + Duration::from_secs(1));
        let s = p.stats();
        assert_eq!((s.buffers_pooled, s.bytes_pooled, s.evictions), (0, 0, 1));
        // The next request allocates again.
        drop(p.acquire(BufferClass::Storage, 100).unwrap());
        assert_eq!(p.stats().allocations, 2);
    }

    #[test]
    fn the_cap_evicts_least_recently_released_first() {
        let p = pool(4096, Duration::from_secs(60));
        let a = p.acquire(BufferClass::Storage, 2048).unwrap();
        let b = p.acquire(BufferClass::Storage, 1024).unwrap();
        let c = p.acquire(BufferClass::Storage, 2048).unwrap();
        let a_id = a.0;
        let c_id = c.0;
        drop(a);
        std::thread::sleep(Duration::from_millis(2));
        drop(b);
        std::thread::sleep(Duration::from_millis(2));
        drop(c); // 5120 pooled > 4096: `a` (oldest) goes.
        let s = p.stats();
        assert_eq!((s.bytes_pooled, s.evictions), (3072, 1));
        let reused = p.acquire(BufferClass::Storage, 2048).unwrap();
        assert_eq!(reused.0, c_id);
        assert_ne!(reused.0, a_id);
        // A buffer larger than the cap is never kept.
        drop(p.acquire(BufferClass::Storage, 8192).unwrap());
        assert_eq!(p.stats().bytes_pooled, 1024);
        // Lowering the cap applies at once.
        p.set_config(PoolConfig {
            max_pool_bytes: 0,
            ..p.config()
        });
        assert_eq!(p.stats().bytes_pooled, 0);
    }

    #[test]
    fn concurrent_use_keeps_the_books_straight() {
        let p = pool(1 << 30, Duration::from_secs(60));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let p = p.clone();
                s.spawn(move || {
                    for i in 0..500u64 {
                        let size = 256 << ((t + i) % 5);
                        let a = p.acquire(BufferClass::Storage, size).unwrap();
                        let b = p.acquire(BufferClass::Uniform, 300).unwrap();
                        assert!(a.size() >= size);
                        drop((a, b));
                    }
                });
            }
        });
        let s = p.stats();
        assert_eq!(s.bytes_in_use, 0);
        assert_eq!(s.hits + s.misses, 8 * 500 * 2);
        assert_eq!(s.allocations, s.misses);
        // At most one buffer per thread and bucket was ever needed.
        assert!(s.allocations <= 8 * 6, "{s:?}");
        assert_eq!(s.buffers_pooled, s.allocations - s.evictions);
    }
}
