//! What statfs(2) tells about the file system holding a path or a descriptor: its type (the
//! magic number) and its space. Inline page-cache writes (`pagewrite`) and the log's blocks
//! reserved ahead both decide by it.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

pub const EXT4_SUPER_MAGIC: i64 = 0xEF53;
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A file system's type and space, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct FsInfo {
    /// statfs's f_type.
    pub magic: i64,
    /// Available to an unprivileged writer (f_bavail).
    pub free: u64,
    pub total: u64,
}

impl FsInfo {
    // statfs's field widths differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn from(st: &libc::statfs) -> FsInfo {
        let bsize = st.f_bsize as u64;
        FsInfo {
            magic: st.f_type as i64,
            free: (st.f_bavail as u64).saturating_mul(bsize),
            total: (st.f_blocks as u64).saturating_mul(bsize),
        }
    }
}

/// The file system `path` is on.
pub fn of_path(path: &Path) -> io::Result<FsInfo> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; an all-zero value is valid and statfs overwrites it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid statfs buffer.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FsInfo::from(&st))
}

/// The file system the open descriptor `fd` is on. fstatfs reads counters in memory; it does
/// not wait on the disk, so an executor may call it.
pub fn of_fd(fd: RawFd) -> io::Result<FsInfo> {
    // SAFETY: as in `of_path`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a descriptor the caller keeps open for the call, `st` a valid buffer.
    if unsafe { libc::fstatfs(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FsInfo::from(&st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_path_and_a_descriptor_on_it_give_the_same_file_system() {
        assert_eq!(of_path(Path::new("/proc")).unwrap().magic, 0x9fa0);
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(of_fd(f.as_raw_fd()).unwrap().magic, 0x9fa0);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let info = of_path(dir).unwrap();
        assert!(info.total > 0 && info.free <= info.total);
        assert!(of_fd(-1).is_err());
        assert!(of_path(Path::new("/no/such/dir")).is_err());
    }
}
