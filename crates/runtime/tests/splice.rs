//! The inline splice's page-cache check and splice, against a real file.

use runnel_runtime::ring::all_cached;
use runnel_runtime::Pipe;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};

#[test]
fn cached_ranges_splice_inline_and_evicted_ones_do_not() {
    // (Under target/: a tmpfs temp dir would keep its pages whatever the advice.)
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("splice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("segment");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let fd = f.as_raw_fd();
    // Just written: in the page cache.
    assert!(all_cached(fd, 0, data.len() as u64));
    assert!(all_cached(fd, 5000, 10));
    let pipe = Pipe::new(1 << 20).unwrap();
    let n = pipe.splice_in_cached(fd, 100, 9000).unwrap();
    assert_eq!(n, Some(9000));
    // SAFETY: a duplicate of the pipe's read end, owned by this File alone.
    let mut out = unsafe { std::fs::File::from_raw_fd(libc::dup(pipe.read_fd())) };
    let mut got = vec![0u8; 9000];
    out.read_exact(&mut got).unwrap();
    assert_eq!(got, data[100..9100]);
    // Clean pages dropped from the cache: not inline (the ring reads them, off the
    // executor).
    // SAFETY: advice on a descriptor we hold.
    assert_eq!(
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) },
        0
    );
    assert!(!all_cached(fd, 0, data.len() as u64));
    assert_eq!(pipe.splice_in_cached(fd, 0, 4096).unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
