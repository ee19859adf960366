//! A private `redis-server` on a free loopback port in a temporary directory: what `demo` and
//! `bench` use when no Redis was named, and what the tests run against. It never touches a
//! Redis the user did not name.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start the server.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `appendonly yes` with `appendfsync always`: no acknowledged write is lost on a kill.
    pub durable: bool,
    /// Extra `--name value` arguments.
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("redis-server was not found on PATH; install it with: sudo apt-get install -y redis-server")]
    Missing,
    #[error("redis-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis-server did not answer PING on port {port} within 5 s (log: {log})")]
    NotReady { port: u16, log: String },
}

/// A running private server; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    options: RedisOptions,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when something on `addr` answers a PING with PONG.
pub fn answers_ping(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
    /// Starts a server in a new temporary directory.
    pub fn start(options: RedisOptions) -> Result<RedisServer, ServerError> {
        let temp = tempfile::Builder::new().prefix("maestro-redis-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let mut server = RedisServer { child: None, port: 0, dir, _temp: Some(temp), options };
        let mut last = None;
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(ServerError::Missing) => return Err(ServerError::Missing),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ServerError::NotReady { port: 0, log: String::new() }))
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no", "--protected-mode", "yes"]);
        if self.options.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        for (name, value) in &self.options.extra {
            cmd.arg(format!("--{name}")).arg(value);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { ServerError::Missing } else { ServerError::Io(e) }
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if answers_ping(&self.addr()) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(ServerError::NotReady { port: self.port, log: std::fs::read_to_string(&log).unwrap_or_default() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (an append-only file, if any,
    /// is loaded back).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }

    /// Starts it again with its data directory emptied: Redis comes back with nothing.
    pub fn restart_empty(&mut self) -> Result<(), ServerError> {
        self.kill();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else if path.file_name().is_some_and(|n| n != "redis.log") {
                std::fs::remove_file(&path)?;
            }
        }
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
