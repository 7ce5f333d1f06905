//! The BPF filesystem: mounting it when missing, the daemon lock on the pin directory, stale pins.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use super::ShieldError;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: statfs writes into a zeroed struct we own; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a live, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure the parent of `pin_path` is on a bpffs, mounting `/sys/fs/bpf` when it is the parent and nothing is
/// mounted there yet (as Debian does not mount it at boot).
pub fn ensure_mounted(pin_path: &Path) -> Result<(), ShieldError> {
    let parent = pin_path.parent().unwrap_or(Path::new("/"));
    match is_bpffs(parent) {
        Ok(true) => return Ok(()),
        Ok(false) | Err(_) if parent == Path::new("/sys/fs/bpf") => {}
        Ok(false) => {
            return Err(ShieldError::NotBpffs(parent.into()));
        }
        Err(e) => {
            return Err(ShieldError::Bpffs {
                path: parent.into(),
                source: e,
            });
        }
    }
    std::fs::create_dir_all(parent).map_err(|e| ShieldError::Bpffs {
        path: parent.into(),
        source: e,
    })?;
    let target = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    let fstype = std::ffi::CString::new("bpf").unwrap();
    // SAFETY: plain mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ShieldError::Bpffs {
            path: parent.into(),
            source: io::Error::last_os_error(),
        });
    }
    tracing::info!(path = "/sys/fs/bpf", "mounted the BPF filesystem");
    Ok(())
}

/// An exclusive `flock` on the pin directory, held for the daemon's lifetime. The kernel releases it when
/// the process dies, so a killed daemon never blocks the next start.
#[derive(Debug)]
pub struct PinDirLock {
    _dir: File,
    path: PathBuf,
}

impl PinDirLock {
    /// Creates the pin directory if needed and locks it.
    pub fn acquire(pin_path: &Path) -> Result<Self, ShieldError> {
        match std::fs::create_dir(pin_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(ShieldError::Bpffs {
                    path: pin_path.into(),
                    source: e,
                });
            }
        }
        let dir = File::open(pin_path).map_err(|e| ShieldError::Bpffs {
            path: pin_path.into(),
            source: e,
        })?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(ShieldError::PinPathInUse(pin_path.into()));
            }
            return Err(ShieldError::Bpffs {
                path: pin_path.into(),
                source: err,
            });
        }
        Ok(Self {
            _dir: dir,
            path: pin_path.into(),
        })
    }

    /// Removes every pin left in the directory (by a daemon that was killed). Returns how many.
    pub fn clear_stale_pins(&self) -> Result<usize, ShieldError> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.path).map_err(|e| ShieldError::Bpffs {
            path: self.path.clone(),
            source: e,
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| ShieldError::Bpffs {
                path: p.clone(),
                source: e,
            })?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Unpins everything and removes the directory (on shutdown, or after a failed start).
    pub fn remove_all(&self) {
        let _ = self.clear_stale_pins();
        let _ = std::fs::remove_dir(&self.path);
    }
}
