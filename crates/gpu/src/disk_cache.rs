//! Compiled pipelines kept on disk between processes, where the backend lets
//! the application keep them (wgpu's pipeline cache: Vulkan). Metal keeps its
//! own compiled-shader cache, so on a Mac this does nothing.
//!
//! One file per adapter class (`wgpu::util::pipeline_cache_key`) in
//! [`CACHE_DIR_ENV`] or the user's cache folder. The file is our header
//! (magic, CRC-32 and length of the payload) then wgpu's data; a file that does
//! not check out is ignored and rewritten, so a damaged cache costs a
//! recompilation, never a driver fed with bad bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The folder of the pipeline cache; empty or `off` disables it.
pub const CACHE_DIR_ENV: &str = "METAL_MPS_CACHE_DIR";

const MAGIC: &[u8; 8] = b"MMPSPLC1";
const HEADER: usize = 8 + 4 + 8;

/// A pipeline cache backed by one file.
pub struct DiskCache {
    pub cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Pipelines were compiled since the file was last written.
    dirty: AtomicBool,
    /// One writer at a time within the process.
    writing: Mutex<()>,
}

impl DiskCache {
    /// The cache of this adapter, filled from its file when one checks out;
    /// `None` when the backend keeps no application caches, the device lacks
    /// `PIPELINE_CACHE`, or no folder is set.
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<DiskCache> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = cache_dir()?.join(wgpu::util::pipeline_cache_key(info)?);
        let data = read_payload(&path);
        // SAFETY: `data` is what `get_data` gave a previous process for an
        // adapter of the same key, byte for byte (the CRC-32 checks that);
        // `fallback` makes wgpu start empty when the driver refuses it.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("metal_mps pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(DiskCache {
            cache,
            path,
            dirty: AtomicBool::new(false),
            writing: Mutex::new(()),
        })
    }

    /// Notes that a pipeline was compiled through the cache.
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache's data if pipelines were compiled since the last
    /// write: a temporary file renamed over the old one, so readers never see
    /// half a file. A failure (read-only folder, full disk) leaves the cache
    /// in memory only and says so in the returned error.
    pub fn save(&self) -> std::io::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(());
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let result = std::fs::write(&tmp, wrap_payload(&data))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// [`CACHE_DIR_ENV`], else `$XDG_CACHE_HOME/metal_mps`, else
/// `~/Library/Caches/metal_mps` on macOS and `~/.cache/metal_mps` elsewhere.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return (!dir.is_empty() && dir != "off").then(|| PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(xdg).join("metal_mps"));
    }
    let home = PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Caches/metal_mps")
    } else {
        home.join(".cache/metal_mps")
    })
}

fn wrap_payload(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// wgpu's data in the cache file at `path`, if the file exists and its header
/// and checksum hold.
pub fn read_payload(path: &Path) -> Option<Vec<u8>> {
    unwrap_payload(&std::fs::read(path).ok()?)
}

/// The payload of a cache file's bytes, if its header and checksum hold.
fn unwrap_payload(file: &[u8]) -> Option<Vec<u8>> {
    let (header, data) = file.split_at_checked(HEADER)?;
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let len = u64::from_le_bytes(header[12..20].try_into().ok()?);
    (header[..8] == MAGIC[..] && len == data.len() as u64 && crc32fast::hash(data) == crc)
        .then(|| data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_damage_is_refused() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = wrap_payload(&data);
        assert_eq!(unwrap_payload(&file).as_deref(), Some(&data[..]));
        let mut flipped = file.clone();
        flipped[HEADER + 500] ^= 1;
        assert_eq!(unwrap_payload(&flipped), None);
        assert_eq!(unwrap_payload(&file[..file.len() - 1]), None);
        assert_eq!(unwrap_payload(&file[..5]), None);
        let mut other = file.clone();
        other[0] = b'X';
        assert_eq!(unwrap_payload(&other), None);
    }
}
