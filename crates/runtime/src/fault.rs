//! Fault injection for tests: make an operation of this thread's ring fail as a disk would.
//!
//! Some failures cannot be produced on demand with real hardware in a test (an fdatasync that
//! reports EIO once, as Linux does after a writeback error, and then succeeds again). A test
//! installs a hook on the executor thread it runs on; the ring asks it before each such
//! operation. With no hook installed (the broker never installs one) the cost is one
//! thread-local check per fdatasync, next to a system call that takes microseconds.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Decides, per fdatasync, whether it fails (Some(error), and the sync is not done) or runs.
pub type FdatasyncHook = Box<dyn FnMut(&Arc<OwnedFd>) -> Option<io::Error>>;

thread_local! {
    static FDATASYNC: RefCell<Option<FdatasyncHook>> = const { RefCell::new(None) };
}

/// Installs (or with None removes) the fdatasync hook of the calling thread.
pub fn set_fdatasync_hook(hook: Option<FdatasyncHook>) {
    FDATASYNC.with(|h| *h.borrow_mut() = hook);
}

pub(crate) fn fdatasync_fault(file: &Arc<OwnedFd>) -> Option<io::Error> {
    FDATASYNC.with(|h| h.borrow_mut().as_mut().and_then(|f| f(file)))
}
