//! Confining the files a model names to the model's folder.

use std::path::{Path, PathBuf};

/// The canonical path of the regular file `rel` names inside `root`, with every
/// symbolic link and `..` resolved, or `None` when `rel` is absolute, does not
/// exist, is not a regular file, or resolves outside `root`.
///
/// Callers report every `None` with one message, so that a refused path does not
/// reveal whether something exists outside the folder.
pub fn resolve_within(root: &Path, rel: &Path) -> Option<PathBuf> {
    if rel.is_absolute() || rel.as_os_str().is_empty() {
        return None;
    }
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let root = root.canonicalize().ok()?;
    let file = root.join(rel).canonicalize().ok()?;
    (file.starts_with(&root) && file.is_file()).then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_inside_the_folder() {
        let dir = std::env::temp_dir().join(format!("mm-paths-{}", std::process::id()));
        let root = dir.join("model");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/w.bin"), b"w").unwrap();
        std::fs::write(dir.join("outside.bin"), b"o").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("sub/w.bin", root.join("inside")).unwrap();
            std::os::unix::fs::symlink("../outside.bin", root.join("outside")).unwrap();
            std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        }
        let ok = |rel: &str| resolve_within(&root, Path::new(rel)).is_some();
        assert!(ok("sub/w.bin") && ok("./sub/w.bin") && ok("sub/../sub/w.bin"));
        assert!(!ok("../outside.bin") && !ok("sub") && !ok(".") && !ok("missing"));
        assert!(!ok(dir.join("outside.bin").to_str().unwrap()));
        #[cfg(unix)]
        assert!(ok("inside") && !ok("outside") && !ok("up/outside.bin"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
