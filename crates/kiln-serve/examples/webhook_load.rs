//! A load generator for `kiln serve`'s webhook endpoint (used by
//! `bench/serve.sh`; not a test).
//!
//! `webhook_load URL SECRET_FILE [COUNT] [CONCURRENCY] [KILL_AFTER PID]`
//! sends `COUNT` (1,000) GitHub `push` deliveries to `URL/hooks/github` from
//! `CONCURRENCY` (50) connections: one in ten signed wrongly, one in ten a
//! redelivery of an earlier one, the rest new (`[skip kiln]` commits, so the
//! database, not the builds, is measured). It prints the counts by answer
//! and the latency percentiles of the accepted ones, and writes every
//! acknowledged `delivery job` pair to stdout's last lines after `acked:`.
//! With `KILL_AFTER` and `PID`, it SIGKILLs `PID` once `KILL_AFTER` deliveries were
//! acknowledged (`bench/serve.sh` then checks that none was lost).

// A benchmark tool prints its results.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An acknowledged delivery: its id, its job, how long the 202 took,
/// whether it was a redelivery.
type Acked = (String, i64, Duration, bool);

struct Delivery {
    id: String,
    body: Vec<u8>,
    signature: String,
}

fn deliveries(secret: &[u8], count: usize) -> Vec<Delivery> {
    let run = std::process::id();
    (0..count)
        .map(|i| {
            // One in ten repeats the delivery five before it.
            let n = if i % 10 == 7 { i - 5 } else { i };
            let sha = format!("{:040x}", n + 1);
            let body = serde_json::json!({
                "ref": "refs/heads/main",
                "before": "0000000000000000000000000000000000000000",
                "after": sha,
                "head_commit": { "id": sha, "message": "[skip kiln] load", "author": { "name": "load" } },
                "repository": { "name": "images", "full_name": "acme/images" },
            })
            .to_string()
            .into_bytes();
            let signature = if i % 10 == 3 {
                format!("sha256={}", "0".repeat(64))
            } else {
                format!("sha256={}", kiln_serve::hooks::sign(secret, &body))
            };
            Delivery {
                id: format!("load-{run}-{n}"),
                body,
                signature,
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: webhook_load URL SECRET_FILE [COUNT] [CONCURRENCY] [KILL_AFTER PID]");
        std::process::exit(2);
    }
    let url = format!("{}/hooks/github", args[1].trim_end_matches('/'));
    let secret = std::fs::read_to_string(&args[2]).expect("the secret file reads");
    let count = args.get(3).map_or(1000, |a| a.parse().expect("COUNT"));
    let concurrency = args.get(4).map_or(50, |a| a.parse().expect("CONCURRENCY"));
    let kill: Option<(usize, String)> = args
        .get(5)
        .map(|a| (a.parse().expect("KILL_AFTER"), args[6].clone()));
    let work = Arc::new(deliveries(secret.trim().as_bytes(), count));
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let other: Arc<Mutex<Vec<u16>>> = Arc::default();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (work, next, acked, other, kill, killed, url) = (
                Arc::clone(&work),
                Arc::clone(&next),
                Arc::clone(&acked),
                Arc::clone(&other),
                kill.clone(),
                Arc::clone(&killed),
                url.clone(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(d) = work.get(i) else { break };
                    let sent = Instant::now();
                    let answer = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", &d.id)
                        .header("X-Hub-Signature-256", &d.signature)
                        .send(&d.body[..]);
                    let Ok(mut answer) = answer else {
                        other.lock().expect("lock").push(0);
                        continue;
                    };
                    let status = answer.status().as_u16();
                    let text = answer.body_mut().read_to_string().unwrap_or_default();
                    let took = sent.elapsed();
                    if status != 202 {
                        other.lock().expect("lock").push(status);
                        continue;
                    }
                    let json: serde_json::Value =
                        serde_json::from_str(&text).expect("a 202 answers JSON");
                    let job = json["job"].as_i64().expect("a job id");
                    let duplicate = json["duplicate"] == true;
                    let mut acked = acked.lock().expect("lock");
                    acked.push((d.id.clone(), job, took, duplicate));
                    if let Some((after, pid)) = &kill
                        && acked.len() >= *after
                        && !killed.swap(true, Ordering::SeqCst)
                    {
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", pid])
                            .status();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a sender");
    }
    let seconds = start.elapsed().as_secs_f64();
    let acked = acked.lock().expect("lock");
    let other = other.lock().expect("lock");
    let mut latencies: Vec<Duration> = acked.iter().map(|a| a.2).collect();
    latencies.sort_unstable();
    let duplicates = acked.iter().filter(|a| a.3).count();
    let unauthorized = other.iter().filter(|s| **s == 401).count();
    let failed = other.iter().filter(|s| **s != 401).count();
    println!(
        "deliveries: {count} at concurrency {concurrency} in {seconds:.2} s ({:.0}/s)",
        count as f64 / seconds
    );
    println!(
        "accepted (202): {} ({} new jobs, {duplicates} duplicates); rejected (401): {unauthorized}; other/failed: {failed}",
        acked.len(),
        acked.len() - duplicates
    );
    println!(
        "accepted latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!("acked:");
    for (id, job, _, _) in acked.iter() {
        println!("{id} {job}");
    }
}
