//! An ordered parallel map: jobs run on a few threads, results are
//! handed on in job order, so what is written never depends on how many
//! threads ran or how they were scheduled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use crate::error::Error;

/// How far ahead of the consumer workers may run: bounds the results
/// held in memory while one slow job is still going (at most this many
/// blocks per thread). Large, because jobs differ in cost by 1000× (a
/// tail read vs a block compressed at zstd -15): a small window leaves a
/// thread idle behind one slow block.
const WINDOW_PER_THREAD: usize = 256;

/// Runs `work` on every job on `threads` threads, each with its own
/// state from `init`, and gives the results to `sink` in job order on
/// the calling thread. The first error stops everything.
pub(crate) fn run_ordered<J, S, R>(
    threads: usize,
    jobs: &[J],
    init: impl Fn() -> Result<S, Error> + Sync,
    work: impl Fn(&mut S, &J) -> Result<R, Error> + Sync,
    mut sink: impl FnMut(usize, R) -> Result<(), Error>,
) -> Result<(), Error>
where
    J: Sync,
    R: Send,
{
    let threads = threads.clamp(1, jobs.len().max(1));
    let window = threads * WINDOW_PER_THREAD;
    let next = AtomicUsize::new(0);
    // The number of results consumed; `usize::MAX` once the consumer
    // stopped, to release waiting workers.
    let done = Mutex::new(0usize);
    let advanced = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, Result<R, Error>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, done, advanced, init, work) = (&next, &done, &advanced, &init, &work);
            scope.spawn(move || {
                let mut state = match init() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send((next.load(Ordering::Relaxed), Err(e)));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs.len() {
                        return;
                    }
                    {
                        let mut d = done
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        while *d != usize::MAX && i >= *d + window {
                            d = advanced
                                .wait(d)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        if *d == usize::MAX {
                            return;
                        }
                    }
                    let result = work(&mut state, &jobs[i]);
                    let failed = result.is_err();
                    if tx.send((i, result)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let release = |value: usize| {
            *done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
            advanced.notify_all();
        };
        let mut pending = BTreeMap::new();
        let mut consumed = 0;
        let result = (|| {
            while consumed < jobs.len() {
                let Ok((i, r)) = rx.recv() else {
                    // Every worker ended before all results came: one
                    // failed to start and its error was already sent, or
                    // a worker panicked (the scope re-raises that).
                    return Err(Error::Compress {
                        compressor: "squashfs",
                        reason: "the compression threads stopped early".into(),
                    });
                };
                pending.insert(i, r);
                while let Some(r) = pending.remove(&consumed) {
                    sink(consumed, r?)?;
                    consumed += 1;
                }
                // An error from a job that is not next in line is still
                // an error: stop early instead of running the rest.
                if let Some(k) = pending.iter().find(|(_, r)| r.is_err()).map(|(k, _)| *k) {
                    if let Some(Err(e)) = pending.remove(&k) {
                        return Err(e);
                    }
                }
                release(consumed);
            }
            Ok(())
        })();
        release(usize::MAX);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_job_order() {
        let jobs: Vec<u64> = (0..2000).collect();
        for threads in [1, 2, 5] {
            let mut seen = Vec::new();
            run_ordered(
                threads,
                &jobs,
                || Ok(()),
                // Uneven work, so threads finish out of order.
                |(), &j| {
                    if j % 97 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Ok(j * 2)
                },
                |i, r| {
                    seen.push((i, r));
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(
                seen,
                jobs.iter()
                    .map(|&j| (j as usize, j * 2))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_first_error_stops_the_run() {
        let jobs: Vec<usize> = (0..10_000).collect();
        let fail = |what: &str| Error::Compress {
            compressor: "test",
            reason: what.into(),
        };
        let mut consumed = 0;
        let err = run_ordered(
            2,
            &jobs,
            || Ok(()),
            |(), &j| if j == 100 { Err(fail("job")) } else { Ok(j) },
            |_, _| {
                consumed += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("job"));
        assert!(consumed <= 100);
        // A failing consumer stops the workers too (no hang).
        let err = run_ordered(
            2,
            &jobs,
            || Ok(()),
            |(), &j| Ok(j),
            |_, _| Err(fail("sink")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sink"));
        // And so does a worker that cannot start.
        let err = run_ordered(
            2,
            &jobs,
            || Err::<(), _>(fail("init")),
            |(), &j| Ok(j),
            |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("init"));
    }
}
