//! Fuzz target bodies, shared by two runners:
//! - `fuzz/` (cargo fuzz, nightly, coverage-guided libFuzzer) for long runs:
//!   `cargo +nightly fuzz run <target> -- -max_total_time=3600` (see fuzz/README.md);
//! - [`smoke`], a bounded run of each body over its seed corpus and random mutations of it,
//!   in the ordinary test build, so the README's test command exercises every target in
//!   seconds without a second (instrumented) build of the workspace.
//!
//! Each body panics only on a broken invariant (a bug): decoding arbitrary bytes must
//! answer with an error, never a panic, and never allocate what the input did not pay for.

pub mod batch;
pub mod fetch_response;
pub mod framing;
pub mod group;
pub mod recovery;
pub mod request;

/// A target body: panics only on a broken invariant.
pub type Target = fn(&[u8]);

/// The targets by name, as fuzz/fuzz_targets names them.
pub const TARGETS: &[(&str, Target)] = &[
    ("framing", framing::run),
    ("request", request::run),
    ("record_batch", batch::run),
    ("segment_recovery", recovery::run),
    ("fetch_response", fetch_response::run),
    ("group_coordinator", group::run),
];

/// The seeds each target starts from, built in code (fuzz/corpus adds captures of real
/// clients' requests).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "framing" => framing::seeds(),
        "request" => request::seeds(),
        "record_batch" => batch::seeds(),
        "segment_recovery" => recovery::seeds(),
        "fetch_response" => fetch_response::seeds(),
        "group_coordinator" => group::seeds(),
        _ => Vec::new(),
    }
}

/// Runs `fut` to completion on this thread's glommio executor. One executor serves every
/// input of a thread: an executor per input leaks glommio's per-executor descriptors and
/// ran the fuzzer out of them after ~10,000 inputs. A panic in `fut` (a broken invariant)
/// is caught inside the executor and resumed out here, so the executor stays usable: the
/// smoke run shrinks a failing input by running the target again, and an executor a panic
/// unwound through would hang it.
pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    use futures_lite::FutureExt;
    thread_local! {
        static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("a glommio executor");
    }
    let result = EXECUTOR.with(|ex| ex.run(std::panic::AssertUnwindSafe(fut).catch_unwind()));
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A small deterministic generator (xorshift64*), so a smoke run is reproducible from its
/// seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// One libFuzzer-style mutation of `input`: flip, set, insert or remove bytes, cut the tail,
/// splice in part of another seed, or overwrite with an "interesting" integer.
pub fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    const INTERESTING: [i64; 10] = [
        0,
        -1,
        1,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        -32768,
        i32::MAX as i64,
        i32::MIN as i64,
    ];
    match rng.below(7) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = rng.below(input.len() + 1);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                input.insert(i, rng.next_u64() as u8);
            }
        }
        3 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = (1 + rng.below(8)).min(input.len() - i);
            input.drain(i..i + n);
        }
        4 => input.truncate(rng.below(input.len() + 1)),
        5 if !seeds.is_empty() => {
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from) + 1;
                let at = rng.below(input.len() + 1);
                let tail = input.split_off(at);
                input.extend_from_slice(&other[from..from + n]);
                input.extend(tail);
            }
        }
        _ if input.len() >= 4 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1, 2, 4][rng.below(3)].min(input.len());
            let i = rng.below(input.len() - width + 1);
            let bytes = v.to_be_bytes();
            input[i..i + width].copy_from_slice(&bytes[8 - width..]);
        }
        _ => input.push(rng.next_u64() as u8),
    }
}

/// Runs `target` over every seed, then over `iterations` mutated inputs (1-4 mutations of a
/// random seed each). Returns the inputs run.
pub fn smoke(target: fn(&[u8]), seeds: &[Vec<u8>], iterations: usize, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    for s in seeds {
        target(s);
    }
    let empty = [Vec::new()];
    let pool: &[Vec<u8>] = if seeds.is_empty() { &empty } else { seeds };
    for _ in 0..iterations {
        let mut input = pool[rng.below(pool.len())].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut input, pool, &mut rng);
        }
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let small = shrink(target, input);
            panic!("the input {small:02x?} breaks the target (shrunk from a failing mutation)");
        }
    }
    seeds.len() + iterations
}

/// A smaller input that still panics: drops chunks, then single bytes, while it still fails.
pub fn shrink(target: fn(&[u8]), mut input: Vec<u8>) -> Vec<u8> {
    let fails = |i: &[u8]| std::panic::catch_unwind(|| target(i)).is_err();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut chunk = (input.len() / 2).max(1);
    while chunk >= 1 {
        let mut at = 0;
        while at < input.len() {
            let mut candidate = input.clone();
            candidate.drain(at..(at + chunk).min(input.len()));
            if fails(&candidate) {
                input = candidate;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    std::panic::set_hook(hook);
    input
}

/// The files of a corpus directory (fuzz/corpus/<target>), sorted by name.
pub fn corpus(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(d) => d.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}
