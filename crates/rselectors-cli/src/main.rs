//! `rselectors`: the seeds' socket programs as one command-line tool, each
//! an event loop on the `rselectors` crate (the servers can run one loop
//! per thread with `--threads`), and a load generator to measure them.
//!
//! | subcommand | seed |
//! |---|---|
//! | `echo-server` | 001, 003, 004 (`--upper`: 002) |
//! | `chat-server` | 000 (`CharServer`) |
//! | `client` | the `input()` clients of 002 and 004 |
//! | `echo-client` | 003 |
//! | `load` | (none: a `redis-benchmark` for the two servers) |

#![forbid(unsafe_code)]

mod broker;
mod budget;
mod chat_protocol;
mod chat_server;
mod client;
mod conn;
mod console;
mod echo_client;
mod echo_server;
mod lines;
mod load;
mod logging;
mod server;
mod signals;
mod stdin;
#[cfg(test)]
mod test_support;

use clap::{ArgAction, Args, Parser, Subcommand};
use rselectors::BackendKind;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::Duration;

/// The seeds' socket programs on rselectors: echo, upper-case and chat
/// servers, a line client, an echo client, and a load generator.
///
/// Servers print `listening on ADDR` once bound (use port 0 for any free
/// port) and stop on SIGINT, SIGTERM or SIGHUP (unless started under
/// nohup) with a one-line summary.
#[derive(Debug, Parser)]
#[command(name = "rselectors", version)]
struct Cli {
    /// Log more: -v adds per-connection detail (debug level).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Log warnings only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand has.
#[derive(Debug, Args)]
struct Common {
    /// Address to listen on (servers) or connect to (clients); IPv6 as
    /// [::1]:9999.
    // The comment is clap's help text, shown as written: not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, default_value = "127.0.0.1:9999", value_parser = parse_addr)]
    addr: String,
    /// I/O multiplexing mechanism: default (the platform's best), or one
    /// the platform has: epoll (Linux, Android, illumos), devpoll (illumos,
    /// Solaris), kqueue (macOS, the BSDs), poll, select.
    #[arg(long, default_value = "default", value_name = "KIND", value_parser = parse_selector)]
    selector: BackendKind,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every byte back (seeds 001, 003, 004).
    EchoServer {
        #[command(flatten)]
        common: Common,
        /// Reply upper-cased (ASCII letters), as seed 002 does.
        #[arg(long)]
        upper: bool,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        limits: Limits,
        /// Not for the echo server: refused with an explanation.
        #[arg(long, hide = true, value_name = "URL")]
        broker: Option<String>,
    },
    /// Chat: every line a client sends goes to all clients (seed 000).
    ///
    /// A client leaves with `quit` or an empty line. Console on stdin:
    /// `list` shows the connections, `quit` stops the server.
    ChatServer {
        #[command(flatten)]
        common: Common,
        /// Cut off a client when this many bytes wait to be sent to it
        /// (a client that does not read).
        #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
              value_parser = parse_max_backlog)]
        max_backlog: usize,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        limits: Limits,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Interactive line client: sends what you type, prints what the
    /// server sends as it arrives.
    Client {
        #[command(flatten)]
        common: Common,
        /// After end of input, exit once the server has been silent this
        /// many seconds (or when it closes).
        #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
        wait: Duration,
    },
    /// Send messages to an echo server and check that every byte comes
    /// back (seed 003).
    EchoClient {
        #[command(flatten)]
        common: Common,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
        timeout: Duration,
        /// Messages to send, in order [default: seed 003's two messages]
        #[arg(value_name = "MESSAGE")]
        messages: Vec<OsString>,
    },
    /// Load generator for the echo and chat servers: checks every byte,
    /// ends with one summary line on stdout.
    ///
    /// Modes: `pingpong` (each connection sends --pipeline messages, waits
    /// for their echo, repeats), `stream` (each keeps --pipeline messages
    /// in flight), `churn` (connect, send --pipeline messages, read the
    /// echo, close, repeat: a "message" is a whole connection). `--chat N`
    /// measures chat servers instead: N listeners and --senders senders,
    /// spread over the servers of --addr (repeat it, one per server).
    Load(load::LoadArgs),
}

/// How many event loops a server runs, and how it holds its port.
#[derive(Debug, Args)]
struct Threads {
    /// Event loops, one thread and one selector each, sharing one
    /// listening socket. Loop 0 handles the console and the signals.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Share the port with other servers started with --reuse-port
    /// (SO_REUSEPORT): the kernel spreads new connections over all of
    /// them, and over this server's loops, each then with a socket of its
    /// own. Without it a port in use is an error ("Address already in
    /// use"). Linux, Android, FreeBSD and DragonFly only: elsewhere
    /// sockets sharing a port do not share its connections.
    #[arg(long)]
    reuse_port: bool,
}

/// Chat across servers: a room shared through Redis.
#[derive(Debug, Args)]
struct BrokerArgs {
    /// Share the room with every chat server using this Redis:
    /// redis://[[user]:password@]host:port[/db]. The password may come
    /// from RSELECTORS_BROKER_PASSWORD instead (other users can read
    /// command lines). No TLS yet.
    // Checked in main, not by clap: clap's errors quote the value, and
    // with it the password. The comment is clap's help text, shown as
    // written: not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// The room: servers share lines when broker and room match (Redis
    /// channel or stream `rselectors:chat:NAME`; the channel of a
    /// database N other than 0 is `rselectors:chat:NAME@N`).
    #[arg(long, value_name = "NAME", default_value = "chat", requires = "broker",
          value_parser = broker::parse_room)]
    room: String,
    /// pubsub: at most once, nothing stored in Redis; lines sent while a
    /// server's link is down do not reach the others. streams: lines wait
    /// in --broker-queue while the broker is unreachable and go out when
    /// it is back; a server cut off catches up from where it was.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = broker::Mode::Pubsub,
          requires = "broker")]
    broker_mode: broker::Mode,
    /// The most bytes of lines waiting for the broker (K, M, G suffixes):
    /// past it, lines for the other servers are dropped and counted.
    #[arg(long, value_name = "BYTES", default_value = "16M", requires = "broker",
          value_parser = parse_bytes)]
    broker_queue: usize,
}

impl BrokerArgs {
    /// The link's settings, if `--broker` was given; a clear error
    /// (without the password) if its URL is bad.
    fn config(&self) -> Result<Option<broker::Config>, String> {
        let Some(url) = &self.broker else {
            return Ok(None);
        };
        let password = std::env::var(broker::PASSWORD_VAR).ok();
        let url = broker::BrokerUrl::parse(url, password)
            .map_err(|e| format!("invalid --broker URL: {e}"))?;
        Ok(Some(broker::Config {
            url,
            room: self.room.clone(),
            mode: self.broker_mode,
            queue_limit: self.broker_queue,
        }))
    }
}

/// What no client may take from a server.
#[derive(Debug, Args)]
struct Limits {
    /// Memory the server may hold for its clients, over all loops (output
    /// not yet sent, input not yet made into lines); K, M, G suffixes are
    /// binary. Past 3/4 of it, clients whose output is not leaving are no
    /// longer read; past it, those holding the most that read nothing they
    /// are sent are cut off.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_memory_budget)]
    max_memory: usize,
    /// Close a connection that sends nothing and is sent nothing (the chat
    /// server: sends no whole line) for this long; 0 = never. The default,
    /// 5 minutes, is far past any pause in an interactive session and
    /// frees what a silent client holds (slowloris) in reasonable time.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_idle_timeout)]
    idle_timeout: Duration,
}

impl Limits {
    fn apply(&self) {
        server::limits::configure(self.max_memory, Some(self.idle_timeout));
    }
}

/// `64M`, `1G`, `4096`: bytes, with binary K, M and G suffixes.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("invalid size '{text}': expected BYTES[K|M|G]")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("invalid size '{text}': expected BYTES[K|M|G]"))?;
    if n == 0 {
        return Err("must be more than 0".to_owned());
    }
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// The smallest `--max-memory`: room for a few longest lines and reads,
/// below which every client with anything queued would stop being read.
const MIN_MEMORY_BUDGET: usize = 1024 * 1024;

fn parse_memory_budget(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    if bytes < MIN_MEMORY_BUDGET {
        return Err(format!("'{text}' is below the smallest budget, 1M"));
    }
    Ok(bytes)
}

/// The shortest `--idle-timeout` other than 0 (off): its ticks come a
/// quarter of it apart, and each wakes every loop.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    if text.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    let timeout = parse_seconds(text)?;
    if timeout < MIN_IDLE_TIMEOUT {
        return Err(format!(
            "'{text}' is below the shortest timeout, 0.1 s (0 turns it off)"
        ));
    }
    Ok(timeout)
}

fn parse_selector(name: &str) -> Result<BackendKind, String> {
    name.parse()
        .map_err(|e: rselectors::UnknownBackend| e.to_string())
}

/// `--addr`: `HOST:PORT`, where HOST is an IP address (IPv6 in brackets)
/// or a name to resolve (`localhost:9999`). Only the form is checked here;
/// a name is resolved when it is used.
fn parse_addr(text: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "expected HOST:PORT, such as 127.0.0.1:9999, [::1]:9999 or localhost:9999";
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, port)) if port.starts_with(':') => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("invalid IPv6 address '{ip}'"));
                }
                (ip, &port[1..])
            }
            _ => return Err(EXPECTED.to_owned()),
        },
        None => match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 address goes in brackets: [::1]:9999".to_owned())
            }
            Some(split) => split,
            None => return Err(EXPECTED.to_owned()),
        },
    };
    if host.is_empty() {
        return Err(format!("no host: {EXPECTED}"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("invalid port '{port}': expected 0 to 65535"));
    }
    Ok(text.to_owned())
}

/// A number of seconds, more than 0 and at least the clock's resolution
/// (1 ns): `0.0000000001` would be a zero `Duration`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| "expected a number of seconds".to_owned())?;
    if !seconds.is_finite() {
        return Err("expected a finite number of seconds".to_owned());
    }
    if seconds <= 0.0 {
        return Err("must be more than 0".to_owned());
    }
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("too long: at most {} seconds", u64::MAX))?;
    if duration.is_zero() {
        return Err("below the clock's resolution of 1 ns (0.000000001 seconds)".to_owned());
    }
    Ok(duration)
}

/// `--max-backlog`: a number of bytes, at least 1 (with 0 every client
/// that is not keeping up at once would be cut off).
fn parse_max_backlog(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| "expected a number of bytes".to_owned())?;
    if bytes == 0 {
        return Err(
            "must be at least 1 byte (how much may wait to be sent to one \
                    client before it is cut off)"
                .to_owned(),
        );
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::set_max_level(match (cli.quiet, cli.verbose) {
        (true, _) => logging::Level::Warn,
        (false, 0) => logging::Level::Info,
        (false, _) => logging::Level::Debug,
    });
    if let Command::EchoServer { threads, .. } | Command::ChatServer { threads, .. } = &cli.command
    {
        server::set_reuse_port(threads.reuse_port);
    }
    let result = match cli.command {
        Command::EchoServer {
            broker: Some(_), ..
        } => Err(std::io::Error::other(
            "--broker is for chat-server: the echo server has no room to share",
        )),
        Command::EchoServer {
            common,
            upper,
            threads,
            limits,
            broker: None,
        } => {
            limits.apply();
            echo_server::run(&common.addr, common.selector, upper, threads.threads.into())
        }
        Command::ChatServer {
            common,
            max_backlog,
            threads,
            limits,
            broker,
        } => match broker.config() {
            Err(e) => Err(std::io::Error::other(e)),
            Ok(broker) => {
                limits.apply();
                chat_server::run(
                    &common.addr,
                    common.selector,
                    max_backlog,
                    threads.threads.into(),
                    broker.as_ref(),
                )
            }
        },
        Command::Client { common, wait } => client::run(&common.addr, common.selector, wait),
        Command::EchoClient {
            common,
            timeout,
            messages,
        } => {
            let messages: Vec<Vec<u8>> = if messages.is_empty() {
                echo_client::DEFAULT_MESSAGES
                    .iter()
                    .map(|m| m.as_bytes().to_vec())
                    .collect()
            } else {
                messages.into_iter().map(OsStringExt::into_vec).collect()
            };
            echo_client::run(&common.addr, common.selector, &messages, timeout)
        }
        Command::Load(args) => load::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rselectors: error: {e}");
            ExitCode::FAILURE
        }
    }
}
