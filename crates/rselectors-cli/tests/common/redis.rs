//! The broker tests' `redis-server`: found on the PATH, started on a free
//! loopback port without persistence, in a temporary directory; stopped,
//! paused, resumed and restarted on the same port; killed by its PID on
//! drop. Its [`RedisServer::command`] looks into it.

use super::redis_client::{Reply, RespClient};
use super::TIMEOUT;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What to install when `redis-server` is missing.
const INSTALL: &str = "apt-get install redis-server";

/// Ports tried before giving up (another process may take the free port
/// between choosing it and redis binding it).
const PORT_ATTEMPTS: usize = 5;

/// Tells the temporary directories of one test process apart.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The redis that `start` gave, or the test returns (skipped: `start`
/// said why).
#[macro_export]
macro_rules! redis_or_skip {
    ($start:expr) => {
        match $start {
            Some(redis) => redis,
            None => return,
        }
    };
}

/// A `redis-server` of this test.
#[derive(Debug)]
pub struct RedisServer {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Given after the standard arguments (`--requirepass ...`).
    extra: Vec<String>,
    /// `--requirepass`, for [`RedisServer::command`].
    password: Option<String>,
}

impl RedisServer {
    /// Starts a `redis-server`, or `None` (having said so) when it is not
    /// installed; in CI (`CI=true`) a missing `redis-server` fails.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with `extra` arguments for redis.
    pub fn start_with(extra: &[&str]) -> Option<RedisServer> {
        let Some(program) = find_program("redis-server") else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server not found: {INSTALL}");
            }
            eprintln!("skipped: redis-server not found ({INSTALL})");
            return None;
        };
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rselectors-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis's temporary directory");
        let extra: Vec<String> = extra.iter().map(|&s| s.to_owned()).collect();
        let password = extra
            .iter()
            .position(|arg| arg == "--requirepass")
            .and_then(|i| extra.get(i + 1).cloned());
        let mut redis = RedisServer {
            program,
            child: None,
            port: 0,
            dir,
            extra,
            password,
        };
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port();
            if redis.launch() {
                return Some(redis);
            }
        }
        panic!(
            "redis-server did not start on {PORT_ATTEMPTS} ports:\n{}",
            redis.log()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`, without a password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (`STOP`) or resumes (`CONT`) it: a broker that hangs, its
    /// connections open.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid}");
    }

    /// Starts it again on the same port (empty: nothing was persisted)
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch(),
            "redis-server did not restart on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts redis on `self.port` and waits until it answers; false if
    /// it exited first (the port was taken).
    fn launch(&mut self) -> bool {
        let log = File::create(self.log_path()).expect("create redis's log");
        let mut child = Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start redis-server");
        let pid = child.id();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            // Asking for its PID: an answer from another redis that holds
            // the port does not count.
            if let Ok(info) = self.try_command(&[b"INFO", b"server"]) {
                if info.text().contains(&format!("process_id:{pid}\r\n")) {
                    self.child = Some(child);
                    return true;
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server did not answer in {TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            // Polling its port until it listens: nothing to wait on.
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs one command on a new connection (after `AUTH` if redis has a
    /// password) and returns the reply; panics if redis does not answer.
    pub fn command(&self, args: &[&[u8]]) -> Reply {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {:?}: {e}", String::from_utf8_lossy(args[0])))
    }

    /// [`RedisServer::command`] with the words of `text` (none has a
    /// space) as its arguments.
    pub fn run(&self, text: &str) -> Reply {
        let args: Vec<&[u8]> = text.split(' ').map(str::as_bytes).collect();
        self.command(&args)
    }

    fn try_command(&self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut client = RespClient::connect(self.addr())?;
        if let Some(password) = &self.password {
            client.call(&[b"AUTH", password.as_bytes()])?;
        }
        client.call(args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on the PATH, or in /usr/bin or /usr/sbin: an executable file.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}
