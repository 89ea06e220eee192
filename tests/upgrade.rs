//! Zero-downtime binary upgrade: a new process started with `--upgrade` takes the listening
//! sockets over when the old one gets SIGQUIT, while clients keep connecting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{echo_upstream, get, Headland};

#[tokio::test(flavor = "multi_thread")]
async fn a_new_process_takes_over_the_sockets_with_no_refused_connection() {
    let app = echo_upstream("app").await;
    let mut old = Headland::start(&format!(
        "[upstreams.app]\nservers = [\"{app}\"]\n\n[[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n"
    ));
    let http = old.http;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU32::new(0));
    let (loop_stop, loop_answered) = (Arc::clone(&stop), Arc::clone(&answered));
    // Fresh connections all along: a refused or reset one would show as an error here.
    let clients = tokio::spawn(async move {
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !loop_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match tokio::net::TcpStream::connect(http).await {
                Err(error) => failures.push(format!("connect: {error}")),
                Ok(_) => {
                    let response = get(http, "app.test", "/").await;
                    if response.status == 200 {
                        loop_answered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.push(format!("status {}", response.status));
                    }
                }
            }
        }
        failures
    });
    // Counted progress instead of fixed sleeps: the loop has run before the upgrade, and
    // runs on the new process alone afterwards, however slow the machine.
    wait_answered(&answered, 25).await;

    let _new = old.spawn_upgrade();
    // The new process waits on the upgrade socket; give it a moment to get there.
    old.wait_upgrade_socket().await;
    let old_pid = old.pid();
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(30)),
        "old process {old_pid} did not exit"
    );
    // Keep the loop running on the new process alone for a while.
    wait_answered(&answered, answered.load(Ordering::SeqCst) + 25).await;
    stop.store(true, Ordering::Relaxed);
    let failures = clients.await.unwrap();
    let ok = answered.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 50, "the loop ran ({ok} requests)");
    // The new process answers, and wrote its pid.
    assert_eq!(get(http, "app.test", "/").await.status, 200);
    let pid = std::fs::read_to_string(old.dir.join("headland.pid")).unwrap();
    assert_ne!(pid.trim(), old_pid.to_string());
}

/// Waits (bounded) until the client loop has had `n` answers.
async fn wait_answered(answered: &AtomicU32, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the client loop stalled at {} answers",
            answered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
