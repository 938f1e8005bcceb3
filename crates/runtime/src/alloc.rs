//! The allocator's thresholds, set once at start.
//!
//! Request frames of a few hundred KiB are allocated and freed at every request. With
//! glibc's defaults the first such frame is mmap'ed, and each free of memory at the top of a
//! thread's heap past 2x the (adaptive) mmap threshold hands the pages back to the kernel
//! (`madvise(MADV_DONTNEED)`), so the next frame faults them in again and the kernel zeroes
//! them: 20,000-100,000 page faults per 5 s of produce on one shard, which with their TLB
//! flushes were about 5 % of the shard thread's CPU. Setting from the start the values glibc's
//! adaptive rule ends at (mmap above 32 MiB, keep up to 64 MiB free at the top of a heap)
//! takes that to a few hundred faults. What is kept is memory the broker already used at its
//! peak, so the resident size never exceeds that peak; frames past 32 MiB (announced and
//! not yet sent, say) are still mmap'ed and their pages mapped only as bytes arrive.

#[cfg(target_env = "gnu")]
/// glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its adaptive threshold stops.
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
#[cfg(target_env = "gnu")]
/// Twice that, as glibc's adaptive rule sets the trim threshold.
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Sets the thresholds; call before any thread starts. Returns false where the allocator
/// refused them (another libc), which only costs the page faults above.
#[cfg(target_env = "gnu")]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only sets allocator parameters; it is called from main before any
    // other thread exists, so no allocation runs concurrently with it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(target_env = "gnu"))]
pub fn keep_freed_memory() -> bool {
    false
}
