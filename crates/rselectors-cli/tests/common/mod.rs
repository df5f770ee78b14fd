//! Test harness: runs the real `rselectors` binary and talks to it over
//! loopback. Every wait is bounded; every child is killed on drop, so a
//! failing test leaves no process behind.

#![allow(dead_code)] // Each test file uses a different part of it.

/// The chat protocol, from the program's own source.
#[path = "../../src/chat_protocol.rs"]
pub mod chat_protocol;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest any single wait in the tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rselectors");

/// The selector names every subcommand takes.
pub const SELECTORS: [&str; 4] = ["default", "epoll", "poll", "select"];

/// Everything a child wrote to one of its pipes, shared with the thread
/// that reads it.
#[derive(Default)]
struct Captured {
    state: Mutex<CapturedState>,
    changed: Condvar,
}

#[derive(Default)]
struct CapturedState {
    bytes: Vec<u8>,
    closed: bool,
}

fn capture(pipe: impl Read + Send + 'static) -> (Arc<Captured>, JoinHandle<()>) {
    let captured = Arc::new(Captured::default());
    let shared = Arc::clone(&captured);
    let handle = thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let chunk = match reader.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(chunk) => chunk.to_vec(),
            };
            reader.consume(chunk.len());
            shared.state.lock().unwrap().bytes.extend_from_slice(&chunk);
            shared.changed.notify_all();
        }
        shared.state.lock().unwrap().closed = true;
        shared.changed.notify_all();
    });
    (captured, handle)
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.state.lock().unwrap().bytes).into_owned()
    }

    fn bytes(&self) -> Vec<u8> {
        self.state.lock().unwrap().bytes.clone()
    }

    /// Waits until `done` holds for the text so far; `None` at the timeout
    /// or when the pipe closed first.
    fn wait_for<T>(&self, timeout: Duration, mut done: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(found) = done(&String::from_utf8_lossy(&state.bytes)) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                return None;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    fn wait_closed(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |_| None::<()>);
        self.state.lock().unwrap().closed
    }
}

/// The lines of `text` that are complete (end with a newline).
fn complete_lines(text: &str) -> std::str::Lines<'_> {
    text[..text.rfind('\n').map_or(0, |i| i + 1)].lines()
}

/// A running `rselectors` process.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    threads: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Runs `rselectors ARGS` with the given stdin.
    pub fn spawn(args: &[&str], stdin: Stdio) -> Proc {
        let mut command = Command::new(BIN);
        command.args(args);
        Proc::spawn_command(command, stdin)
    }

    /// Runs `command` (the binary, or a wrapper such as `prlimit`).
    pub fn spawn_command(mut command: Command, stdin: Stdio) -> Proc {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rselectors");
        let (stdout, out_thread) = capture(child.stdout.take().unwrap());
        let (stderr, err_thread) = capture(child.stderr.take().unwrap());
        Proc {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            threads: vec![out_thread, err_thread],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.bytes()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    fn report(&self) -> String {
        format!(
            "\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until stdout has a line containing `needle`; returns it.
    pub fn wait_stdout_line(&self, needle: &str) -> String {
        self.stdout
            .wait_for(TIMEOUT, |text| {
                complete_lines(text)
                    .find(|l| l.contains(needle))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no stdout line with {needle:?}{}", self.report()))
    }

    /// Waits until stderr has a line containing `needle`; returns it.
    pub fn wait_stderr_line(&self, needle: &str) -> String {
        self.stderr
            .wait_for(TIMEOUT, |text| {
                complete_lines(text)
                    .find(|l| l.contains(needle))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no stderr line with {needle:?}{}", self.report()))
    }

    /// Waits until stderr has at least `count` lines containing `needle`.
    pub fn wait_stderr_count(&self, needle: &str, count: usize) {
        let found = self.stderr.wait_for(TIMEOUT, |text| {
            let seen = complete_lines(text).filter(|l| l.contains(needle)).count();
            (seen >= count).then_some(())
        });
        if found.is_none() {
            let seen = self.stderr().lines().filter(|l| l.contains(needle)).count();
            panic!(
                "{seen} of {count} stderr lines with {needle:?}{}",
                self.report()
            );
        }
    }

    /// Writes to the child's stdin.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(bytes).expect("write to the child's stdin");
        stdin.flush().unwrap();
    }

    /// Takes the child's stdin, to write from another thread.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin is piped")
    }

    /// Closes the child's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit and its output to be read.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.stdout.wait_closed(TIMEOUT);
                self.stderr.wait_closed(TIMEOUT);
                return status;
            }
            if Instant::now() >= deadline {
                panic!("the process did not exit in {TIMEOUT:?}{}", self.report());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// True if the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// User plus system CPU time so far, from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime
        // are fields 14 and 15 of the whole line.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
    }

    /// Peak resident memory, from /proc/PID/status.
    pub fn peak_memory_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A server started by [`start_server`], with the address it listens on.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    /// Types `quit` on the console, checks the clean exit and its summary
    /// (`served` connections), and that every peer then reads end of
    /// stream with nothing before it.
    pub fn quit_from_console(&mut self, served: u64, peers: &mut [Peer]) {
        self.write_stdin(b"quit\n");
        assert!(self.wait_exit().success(), "{}", self.stderr());
        let summary = self.wait_stdout_line("stopped (console quit)");
        assert!(
            summary.contains(&format!("{served} connections served")),
            "{summary}"
        );
        for peer in peers {
            assert_eq!(peer.read_to_close(), b"");
        }
    }
}

impl std::ops::Deref for Server {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Where a test server listens: a free port on IPv4 loopback.
pub const LOOPBACK: &str = "127.0.0.1:0";

/// The arguments that run `server` (`echo-server`, `chat-server`) on
/// [`LOOPBACK`], then `extra`.
pub fn loopback_args<'a>(server: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![server, "--addr", LOOPBACK];
    args.extend_from_slice(extra);
    args
}

/// Starts `server` (`echo-server`, `chat-server`) on [`LOOPBACK`] with
/// `extra` arguments, stdin empty, and waits for its `listening on` line.
pub fn start_on_loopback(server: &str, extra: &[&str]) -> Server {
    start_on_loopback_with(server, extra, Stdio::null())
}

/// Like [`start_on_loopback`] with the given stdin.
pub fn start_on_loopback_with(server: &str, extra: &[&str], stdin: Stdio) -> Server {
    start_server_with(&loopback_args(server, extra), stdin)
}

/// Starts `rselectors ARGS` (a server, with its `--addr`) and waits for
/// its `listening on` line.
pub fn start_server(args: &[&str]) -> Server {
    start_server_with(args, Stdio::null())
}

/// Like [`start_server`] with the given stdin.
pub fn start_server_with(args: &[&str], stdin: Stdio) -> Server {
    let mut command = Command::new(BIN);
    command.args(args);
    start_server_command(command, stdin)
}

/// Starts a server through `command` and waits for `listening on`.
pub fn start_server_command(command: Command, stdin: Stdio) -> Server {
    let proc = Proc::spawn_command(command, stdin);
    let line = proc.wait_stdout_line("listening on ");
    let addr = line
        .trim_start_matches("listening on ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
    Server { proc, addr }
}

/// Connects `n` peers and waits until the server has registered them all
/// (its log has one `connected` line per peer), so none misses a message.
pub fn join(server: &Server, n: usize) -> Vec<Peer> {
    let peers: Vec<Peer> = (0..n).map(|_| Peer::connect(server.addr)).collect();
    for peer in &peers {
        server.wait_stderr_line(&format!("connected {} ", peer.local_addr()));
    }
    peers
}

/// Runs `rselectors SUBCOMMAND --addr ADDR EXTRA...`: a client, or the
/// load generator, of the server at `addr`.
pub fn run_against(subcommand: &str, addr: SocketAddr, extra: &[&str], stdin: Stdio) -> Proc {
    let addr = addr.to_string();
    let mut args = vec![subcommand, "--addr", &addr];
    args.extend_from_slice(extra);
    Proc::spawn(&args, stdin)
}

/// Runs `rselectors load --addr ADDR ARGS` to the end; whether it
/// succeeded, the fields of its summary line (the only line on stdout),
/// and the finished process.
pub fn run_load(addr: SocketAddr, args: &[&str]) -> (bool, HashMap<String, String>, Proc) {
    let mut load = run_against("load", addr, args, Stdio::null());
    let ok = load.wait_exit().success();
    let stdout = load.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line expected:\n{stdout}");
    let fields = lines[0]
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (ok, fields, load)
}

/// True if this machine has IPv6 loopback; else says the test is skipped.
pub fn ipv6_loopback() -> bool {
    let available = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !available {
        eprintln!("note: ::1 is not available here; skipping the IPv6 test");
    }
    available
}

/// A test's connection: line reads with a timeout.
pub struct Peer {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        Peer::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Peer {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Peer {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one line, newline included; panics at EOF or timeout.
    pub fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read a line");
        assert!(
            line.ends_with(b"\n"),
            "connection closed mid-line: {line:?}"
        );
        line
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read the reply");
        buf
    }

    /// Reads until the server closes (EOF or reset); returns what came.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close; got {e} after {rest:?}"),
        }
        rest
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }
}

/// Deterministic non-repeating test data.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// A file in the temp directory, removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    /// Writes `contents` to a new file named after `name` and this test
    /// process.
    pub fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("rselectors-{name}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    /// The file, opened for reading, as a child's stdin.
    pub fn stdin(&self) -> Stdio {
        Stdio::from(std::fs::File::open(&self.0).unwrap())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
pub mod chat_room;
pub mod redis;
pub mod redis_client;
