//! Zero-downtime binary upgrade: a new process started with `--upgrade` takes the listening
//! sockets over when the old one gets SIGQUIT, while clients keep connecting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
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
    let loop_stop = Arc::clone(&stop);
    // Fresh connections all along: a refused or reset one would show as an error here.
    let clients = tokio::spawn(async move {
        let (mut ok, mut failures) = (0u32, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !loop_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match tokio::net::TcpStream::connect(http).await {
                Err(error) => failures.push(format!("connect: {error}")),
                Ok(_) => {
                    let response = get(http, "app.test", "/").await;
                    if response.status == 200 {
                        ok += 1;
                    } else {
                        failures.push(format!("status {}", response.status));
                    }
                }
            }
        }
        (ok, failures)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let _new = old.spawn_upgrade();
    // The new process waits on the upgrade socket; give it a moment to get there.
    let socket = old.dir.join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "new process never opened {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_pid = old.pid();
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(30)),
        "old process {old_pid} did not exit"
    );
    // Keep the loop running on the new process alone for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = clients.await.unwrap();
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
