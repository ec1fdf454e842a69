//! The model repository on disk, laid out as Triton reads it:
//!
//! ```text
//! <repository>/<model>/config.pbtxt          (optional: auto-completed when absent)
//! <repository>/<model>/<version>/model.onnx  (or the config's default_model_filename)
//! ```
//!
//! Version directories are positive integers; other entries are ignored.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A model repository directory.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

/// What changes when a model on disk changes, for poll mode: the config
/// file and every file in the version directories, by size and mtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The models in the repository (its non-hidden subdirectories), sorted.
    pub fn model_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The directory of model `name`, if `name` is a model of the
    /// repository (a plain directory name: no separators, no `..`).
    pub fn model_dir(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && Path::new(name).components().count() == 1;
        let dir = self.root.join(name);
        (plain && dir.is_dir()).then_some(dir)
    }

    /// The version directories of a model directory, ascending.
    pub fn versions(model_dir: &Path) -> Vec<u64> {
        let mut versions: Vec<u64> = std::fs::read_dir(model_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .filter(|&v| v > 0)
            .collect();
        versions.sort_unstable();
        versions
    }

    /// The current fingerprint of a model directory.
    pub fn fingerprint(model_dir: &Path) -> Fingerprint {
        let mut files = Vec::new();
        let mut add = |p: PathBuf| {
            if let Ok(m) = std::fs::metadata(&p) {
                files.push((p, m.len(), m.modified().ok()));
            }
        };
        add(model_dir.join("config.pbtxt"));
        for v in Self::versions(model_dir) {
            let vdir = model_dir.join(v.to_string());
            add(vdir.clone());
            for e in std::fs::read_dir(&vdir).into_iter().flatten().flatten() {
                add(e.path());
            }
        }
        files.sort();
        Fingerprint(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_models_and_versions() {
        let root = std::env::temp_dir().join(format!("mm-repo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["a/1", "a/3", "a/x", "a/0", "b", ".hidden"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("a/1/model.onnx"), b"x").unwrap();
        let repo = Repository::new(&root);
        assert_eq!(repo.model_names().unwrap(), vec!["a", "b"]);
        let a = repo.model_dir("a").unwrap();
        assert_eq!(Repository::versions(&a), vec![1, 3]);
        assert!(repo.model_dir("../a").is_none());
        assert!(repo.model_dir("missing").is_none());
        let before = Repository::fingerprint(&a);
        std::fs::write(root.join("a/1/model.onnx"), b"xy").unwrap();
        assert_ne!(before, Repository::fingerprint(&a));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
