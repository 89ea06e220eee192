//! `headland demo`: the whole proxy with nothing to set up. Three echo upstreams on loopback
//! stand in for a PM2 app, a Docker service and a Kong gateway; a fourth pool is down to show
//! the static placeholder; the proxy listens on 127.0.0.1:8080.

pub mod echo;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, LocatedErrors};

const TEMPLATE: &str = include_str!("demo.toml");
const ZONE: &str = include_str!("demo.zone");
/// The repository's test GeoIP database (13 KiB), so the demo needs no download.
const GEOIP_DATABASE: &[u8] = include_bytes!("../../geoip/test-city.mmdb");
/// The demo's files live in `<temp>/headland-demo-<pid>`.
const WORK_DIR_PREFIX: &str = "headland-demo-";
const PLACEHOLDER_HTML: &str = "<!doctype html>\n<title>Back soon</title>\n<h1>We'll be right back</h1>\n<p>Served by Headland from the static fallback while the app is down.</p>\n";

/// Where the demo listens.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dns: SocketAddr,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("cannot start demo upstreams: {0}")]
    Upstreams(#[source] std::io::Error),
    #[error("cannot write demo files: {0}")]
    Files(#[source] std::io::Error),
    #[error("cannot generate the demo certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    #[error("embedded demo configuration is invalid:\n{0}")]
    Config(LocatedErrors),
}

/// Starts the demo upstreams on a background runtime and returns the proxy configuration
/// that fronts them, and the directory of its files (certificate, key, zone, state) for the
/// caller to remove when the demo ends.
pub fn prepare(addrs: DemoAddrs) -> Result<(Config, PathBuf), DemoError> {
    remove_abandoned_work_dirs();
    let work_dir = std::env::temp_dir().join(format!("{WORK_DIR_PREFIX}{}", std::process::id()));
    match prepare_in(addrs, &work_dir) {
        Ok(config) => Ok((config, work_dir)),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&work_dir);
            Err(error)
        }
    }
}

/// Removes the directories of demos that ended without cleaning up (killed with SIGKILL,
/// or a machine that lost power): those whose process is gone.
fn remove_abandoned_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORK_DIR_PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn prepare_in(addrs: DemoAddrs, work_dir: &Path) -> Result<Config, DemoError> {
    let placeholder = work_dir.join("placeholder");
    std::fs::create_dir_all(&placeholder).map_err(DemoError::Files)?;
    std::fs::write(placeholder.join("index.html"), PLACEHOLDER_HTML).map_err(DemoError::Files)?;
    let names = vec![
        "example.com".into(),
        "*.example.com".into(),
        "localhost".into(),
    ];
    let certificate = rcgen::generate_simple_self_signed(names).map_err(DemoError::Certificate)?;
    let (cert_path, key_path) = (
        work_dir.join("demo-cert.pem"),
        work_dir.join("demo-key.pem"),
    );
    std::fs::write(&cert_path, certificate.cert.pem()).map_err(DemoError::Files)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut file| {
            std::io::Write::write_all(
                &mut file,
                certificate.signing_key.serialize_pem().as_bytes(),
            )
        })
        .map_err(DemoError::Files)?;
    let (geoip_path, zone_path) = (
        work_dir.join("test-city.mmdb"),
        work_dir.join("example.com.zone"),
    );
    std::fs::write(&geoip_path, GEOIP_DATABASE).map_err(DemoError::Files)?;
    std::fs::write(&zone_path, ZONE).map_err(DemoError::Files)?;

    let bind = || TcpListener::bind("127.0.0.1:0").map_err(DemoError::Upstreams);
    let (pm2, docker, kong) = (bind()?, bind()?, bind()?);
    // The "down" app: a port bound for as long as the demo runs but never listening, so
    // connections to it are refused. A port that was merely free a moment ago could be
    // taken by any program and bring the "down" app back to life.
    let (dead, dead_port) = bound_not_listening().map_err(DemoError::Upstreams)?;
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(DemoError::Upstreams)
    };
    let text = TEMPLATE
        .replace("{http}", &addrs.http.to_string())
        .replace("{admin}", &addrs.admin.to_string())
        .replace("{https}", &addrs.https.to_string())
        .replace("{dns}", &addrs.dns.to_string())
        .replace("{geoip}", &path_text(&geoip_path))
        .replace("{zone}", &path_text(&zone_path))
        .replace("{cert}", &path_text(&cert_path))
        .replace("{key}", &path_text(&key_path))
        .replace("{state_dir}", &path_text(work_dir))
        .replace("{placeholder}", &path_text(&placeholder))
        .replace("{pm2}", &port(&pm2)?.to_string())
        .replace("{docker}", &port(&docker)?.to_string())
        .replace("{kong}", &port(&kong)?.to_string())
        .replace("{dead}", &dead_port.to_string());
    let config = config::parse(&text, "demo.toml", Path::new("/")).map_err(DemoError::Config)?;

    let upstreams = [(pm2, "pm2-core"), (docker, "docker-admin"), (kong, "kong")];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Upstreams)?;
    std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || {
            let _dead = dead; // held, never listening, while the demo runs
            runtime.block_on(async move {
                for (listener, name) in upstreams {
                    if listener.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        tokio::spawn(echo::serve(listener, name.to_owned()));
                    }
                }
                std::future::pending::<()>().await;
            })
        })
        .map_err(DemoError::Upstreams)?;
    Ok(config)
}

/// A loopback TCP socket with a port of its own that never listens, and the port:
/// connections are refused. Without SO_REUSEADDR, no other socket can bind the port while
/// it is open.
fn bound_not_listening() -> std::io::Result<(socket2::Socket, u16)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| std::io::Error::other("bound socket without an address"))?;
    Ok((socket, port))
}

/// The commands to try, printed once the demo is up.
pub fn instructions(addrs: DemoAddrs) -> String {
    let port = addrs.http.port();
    let ip = addrs.http.ip();
    let curl = |host: &str, path: &str, flags: &str| {
        format!("curl {flags}--resolve {host}:{port}:{ip} http://{host}:{port}{path}")
    };
    format!(
        "Headland demo is running: proxy on http://{http} and https://{https}, admin on http://{admin}/metrics\n\
         Upstreams: pm2-core (app, example.com), docker-admin (admin, /swarm/), kong (api).\n\
         Try:\n\
         \x20 {app}              # PM2 app: see the headers it received\n\
         \x20 {api}        # Kong gateway\n\
         \x20 {admin_host}            # Docker service\n\
         \x20 {swarm}  # path prefix /swarm/ stripped\n\
         \x20 {status}         # pool down: the static placeholder, 503 + Retry-After\n\
         \x20 {redirect}     # 301 to https://example.com/pricing\n\
         \x20 {unknown}             # no route: 404\n\
         \x20 curl --http2-prior-knowledge -H 'Host: app.example.com' http://{http}/   # HTTP/2 (h2c)\n\
         \x20 curl -k --resolve app.example.com:{https_port}:{ip} https://app.example.com:{https_port}/   # HTTPS, self-signed\n\
         GeoDNS on {dns} (UDP and TCP): api.example.com for a Malaysian, a US and a German client subnet:\n\
         \x20 dig @{dns_ip} -p {dns_port} api.example.com +subnet=10.1.0.0/16 +short   # apac: 192.0.2.10\n\
         \x20 dig @{dns_ip} -p {dns_port} api.example.com +subnet=10.2.0.0/16 +short   # na:   198.51.100.10\n\
         \x20 dig @{dns_ip} -p {dns_port} api.example.com +subnet=10.3.0.0/16 +short   # eu:   203.0.113.10\n\
         \x20 dig @{dns_ip} -p {dns_port} nothing.example.com                          # NXDOMAIN with the SOA\n\
         Press Ctrl-C to stop.",
        http = addrs.http,
        https = addrs.https,
        https_port = addrs.https.port(),
        dns = addrs.dns,
        dns_ip = addrs.dns.ip(),
        dns_port = addrs.dns.port(),
        admin = addrs.admin,
        app = curl("app.example.com", "/", ""),
        api = curl("api.example.com", "/v1/users", ""),
        admin_host = curl("admin.example.com", "/", ""),
        swarm = curl("example.com", "/swarm/rooms?id=7", ""),
        status = curl("status.example.com", "/", "-i "),
        redirect = curl("www.example.com", "/pricing", "-i "),
        unknown = curl("unknown.test", "/", "-i "),
    )
}

fn path_text(path: &Path) -> String {
    // TOML basic strings treat '\' as an escape; keep Windows-style paths working too.
    path.display().to_string().replace('\\', "\\\\")
}
