//! A real full disk for tests: a small tmpfs mounted on a directory (the tests run as
//! root), filled to the last byte, unmounted when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: "1m"), mode 0700, on `dir`. Drop it before
    /// the directory that holds it (declare it after).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs on {} (needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Fills the file system to the last byte; returns the filler file (remove it to make
    /// room again).
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() != std::io::ErrorKind::StorageFull => {
                    panic!("filling {}: {e}", path.display())
                }
                _ => break,
            }
        }
        // The last partial block, byte by byte.
        while let Ok(1) = file.write(&[0]) {}
        let probe = std::fs::write(self.dir.join("probe"), b"x");
        assert!(probe.is_err(), "the file system is not full");
        path
    }

    /// Fills the file system up, then frees `leave` bytes (room for a little, not for all).
    pub fn fill_leaving(&self, leave: u64) {
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(leave)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
