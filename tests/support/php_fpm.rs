//! A real PHP-FPM (Debian's `php-fpm` package) for the FastCGI tests: one master in the
//! foreground with two pools serving the same scripts, one on a reserved loopback TCP port
//! and one on a Unix socket in a scratch directory. Killed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, scratch_dir};

/// How long PHP-FPM may take to open both pools on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct PhpFpm {
    child: Child,
    pub tcp: SocketAddr,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

/// The `php-fpm8.x` binary: Debian installs it in /usr/sbin, versioned.
pub fn binary() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/sbin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("php-fpm"))
            })
            .collect();
        found.sort();
        if let Some(binary) = found.pop() {
            return Some(binary);
        }
    }
    None
}

impl PhpFpm {
    /// Starts PHP-FPM, or `None` (after saying so loudly) when it is not installed and this
    /// is not CI. Under `CI` a missing PHP-FPM fails the test: `.ci/install-deps` installs it.
    pub fn start() -> Option<PhpFpm> {
        let Some(binary) = binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("php-fpm is not installed (run .ci/install-deps)");
            }
            eprintln!("SKIPPED: php-fpm is not installed (apt-get install php-fpm)");
            return None;
        };
        let dir = scratch_dir();
        let port = free_port();
        let tcp = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = dir.join("fpm.sock");
        // Root may run the workers only as root, and only when told so (`-R`).
        let root = nix_is_root();
        let user = if root {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let pool = |name: &str, listen: &str| {
            format!(
                "[{name}]\n{user}listen = {listen}\npm = static\npm.max_children = 2\n\
                 catch_workers_output = yes\n"
            )
        };
        let config = format!(
            "[global]\nerror_log = {log}\npid = {pid}\ndaemonize = no\n\n{tcp_pool}\n{unix_pool}",
            log = dir.join("fpm.log").display(),
            pid = dir.join("fpm.pid").display(),
            tcp_pool = pool("tcp", &tcp.to_string()),
            unix_pool = pool("unix", &socket.display().to_string()),
        );
        let config_path = dir.join("php-fpm.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(&binary);
        // `-n`: no php.ini, so the distribution's settings do not leak into the tests.
        command
            .arg("-n")
            .arg("-y")
            .arg(&config_path)
            .arg("-p")
            .arg(&dir)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            command.arg("-R");
        }
        let child = command.spawn().expect("start php-fpm");
        let mut fpm = PhpFpm {
            child,
            tcp,
            socket,
            dir,
        };
        fpm.wait_ready();
        Some(fpm)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let tcp = std::net::TcpStream::connect_timeout(&self.tcp, Duration::from_secs(1));
            let unix = std::os::unix::net::UnixStream::connect(&self.socket);
            if tcp.is_ok() && unix.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("php-fpm exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                panic!("php-fpm not ready after {START_LIMIT:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fpm.log")).unwrap_or_default()
    }

    /// Stops PHP-FPM (as a crash would): both pools refuse connections afterwards.
    /// SIGTERM, so that the master takes its workers (which hold the listening sockets)
    /// down with it; SIGKILL if it does not exit in time.
    pub fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tests' fixture application.
pub fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/php")
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
