//! Runtime glue, kept in one crate so the rest of Runnel does not care how it is scheduled:
//! glommio executors (one pinned per core) and a companion io_uring [`ring`] per executor for
//! the operations glommio lacks.

pub mod alloc;
pub mod fault;
pub mod fsinfo;
pub mod pagewrite;
pub mod ring;

pub use ring::{ring, Pipe, Ring};

use std::future::Future;

/// Lets every other ready task of this executor run before the caller goes on: for long
/// background work (the log cleaner) that must not hold its shard. Unlike glommio's
/// `yield_if_needed`, which yields only once the task queue's time slice (up to 100 ms) is
/// used up, this always yields.
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    YieldNow(false).await
}

/// Runs the futures concurrently on this executor and collects their outputs in order.
pub async fn join_all<F: std::future::Future + 'static>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: 'static,
{
    let tasks: Vec<_> = futs.into_iter().map(glommio::spawn_local).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Runs `f` to completion on a fresh, unpinned glommio executor on a new thread and returns its
/// output. For tests, benchmarks and tools; the broker builds its own pinned pool.
pub fn run_local<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    run_with(glommio::Placement::Unbound, f)
}

/// Like [`run_local`], but pinned to `cpu`, as the broker's shards are. Measurements need
/// this: io_uring's io-wq workers inherit the submitter's CPU affinity, and an unpinned
/// submitter pays a cross-CPU wake-up per punted operation (measured: ~80 us against ~5 us
/// per buffered 16 KiB write on a 2-vCPU VM).
pub fn run_pinned<F, Fut, T>(cpu: usize, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    run_with(glommio::Placement::Fixed(cpu), f)
}

fn run_with<F, Fut, T>(placement: glommio::Placement, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(placement)
        // Tests run several executors at once; keep each one's registered buffer small so
        // the memlock limit of an unprivileged user is not exhausted.
        .io_memory(512 << 10)
        .spawn(f)
        .expect("cannot start a glommio executor")
        .join()
        .expect("glommio executor panicked")
}
