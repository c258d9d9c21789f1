//! A small parallel map over a slice (the generator's only parallelism).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Maps `f` over `items` on all available cores (at most 8), keeping order. Items are handed
/// out one at a time from a shared counter, so a few slow items do not leave cores idle.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let mut place = |done: Vec<(usize, R)>| {
        for (i, r) in done {
            results[i] = Some(r);
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        place(work());
        for h in handles {
            place(h.join().expect("render thread panicked"));
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}
