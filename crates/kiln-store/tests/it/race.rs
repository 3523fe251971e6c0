//! Two builders of the same variant: one builds, the other waits on
//! `lock()` and then finds the layer with `get()`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use kiln_store::{NewLayer, Store};

use crate::key;

/// Set in a child process re-running the process race test.
const CHILD: &str = "KILN_STORE_TEST_RACE_CHILD";

/// What one builder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Built,
    Found,
}

/// The builder's protocol, as the CLI runs it: lock, look, build if absent.
/// `before_commit` runs while the lock is held and the layer is staged.
fn build_or_find(store: &Store, before_commit: impl FnOnce()) -> Outcome {
    let input = key(1);
    let lock = store.lock(&input).unwrap();
    if store.get(&input).unwrap().is_some() {
        return Outcome::Found;
    }
    let stage = store.stage(&input).unwrap();
    std::fs::write(stage.tree().join("file"), crate::pattern(1000)).unwrap();
    before_commit();
    store
        .commit(
            &lock,
            stage,
            NewLayer {
                variant: "base".into(),
                parent: None,
                epoch: None,
            },
        )
        .unwrap();
    Outcome::Built
}

#[test]
fn two_threads_race_to_build() {
    let tmp = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let building = Arc::new(Mutex::new(()));
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let building = Arc::clone(&building);
                let dir = tmp.path().to_owned();
                scope.spawn(move || {
                    // Each thread opens its own store handle, as two
                    // processes would.
                    let store = Store::open(&dir).unwrap();
                    barrier.wait();
                    build_or_find(&store, || {
                        // Only one thread may ever be here at a time.
                        let _only = building.try_lock().expect("two builders at once");
                        std::thread::sleep(Duration::from_millis(300));
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = outcomes.clone();
    sorted.sort_by_key(|o| *o == Outcome::Found);
    assert_eq!(sorted, vec![Outcome::Built, Outcome::Found], "{outcomes:?}");
    assert!(
        Store::open(tmp.path())
            .unwrap()
            .get(&key(1))
            .unwrap()
            .is_some()
    );
}

/// Two processes (this test binary, run again): the first takes the lock
/// and stages the layer; the second is started and must stay blocked in
/// `lock()` until the first commits, then finds the layer.
#[test]
fn two_processes_race_to_build() {
    if let Ok(dir) = std::env::var(CHILD) {
        let store = Store::open(std::path::Path::new(&dir)).unwrap();
        say("waiting");
        let outcome = build_or_find(&store, || {
            say("staged");
            // Wait for the parent's go (or its end).
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        say(match outcome {
            Outcome::Built => "built",
            Outcome::Found => "found",
        });
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let (mut first, first_lines) = spawn(tmp.path());
    expect(&first_lines, "waiting");
    expect(&first_lines, "staged");

    let (mut second, second_lines) = spawn(tmp.path());
    expect(&second_lines, "waiting");
    // The second is now in lock() (or about to be): it must not get past it.
    assert_eq!(
        second_lines.recv_timeout(Duration::from_millis(500)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the second process got past lock() while the first held it"
    );

    first.stdin.take().unwrap().write_all(b"go\n").unwrap();
    expect(&first_lines, "built");
    expect(&second_lines, "found");
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    assert!(
        Store::open(tmp.path())
            .unwrap()
            .get(&key(1))
            .unwrap()
            .is_some()
    );
}

#[allow(clippy::print_stdout, reason = "a child talks to its parent on stdout")]
fn say(what: &str) {
    println!("child: {what}");
}

/// Starts a child builder; its `child: ` lines arrive on the receiver.
fn spawn(dir: &std::path::Path) -> (Child, Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "race::two_processes_race_to_build",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print the test's name on the same line first.
            if let Some((_, what)) = line.split_once("child: ") {
                if tx.send(what.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

fn expect(lines: &Receiver<String>, what: &str) {
    let got = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(got, what);
}

/// The thread holding the build lock may use the layer it found or built
/// (its use shares the lock); other threads wait until it lets go.
#[test]
fn the_lock_holder_can_use_its_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    crate::build(&store, key(1), "base", None, &[("a", 10)]);
    let (done, finished) = mpsc::channel();
    let inner = store.clone();
    std::thread::spawn(move || {
        let lock = inner.lock(&key(1)).unwrap();
        let guard = inner.use_layers(&[key(1)]).unwrap();
        assert_eq!(inner.verify().unwrap(), vec![]);
        drop(lock);
        done.send(guard).unwrap();
    });
    let guard = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("use_layers waited for its own thread's lock");
    // The guard still holds the layer after the build lock is gone.
    let report = store.gc(&[], &kiln_store::GcPolicy::default()).unwrap();
    assert_eq!(report.in_use, [key(1)]);
    drop(guard);
    // Other tests of this binary spawn processes: a child holds copies of
    // every descriptor, the lock files' included, between its fork and its
    // exec. Such a moment may keep the layer in use; it passes at once.
    let mut removed = 0;
    for _ in 0..100 {
        removed = store
            .gc(&[], &kiln_store::GcPolicy::default())
            .unwrap()
            .removed
            .len();
        if removed > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(removed, 1);

    // Another thread does wait.
    crate::build(&store, key(2), "base", None, &[("a", 10)]);
    let lock = store.lock(&key(2)).unwrap();
    let (used, got) = mpsc::channel();
    let other = store.clone();
    std::thread::spawn(move || {
        let guard = other.use_layers(&[key(2)]).unwrap();
        used.send(guard.layers().len()).unwrap();
    });
    assert_eq!(
        got.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    drop(lock);
    assert_eq!(got.recv_timeout(Duration::from_secs(30)), Ok(1));
}
