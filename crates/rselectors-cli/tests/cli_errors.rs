//! Command-line mistakes: refused before anything is bound or connected,
//! with a message that names the bad value.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::Stdio;

const SUBCOMMANDS: [&str; 5] = [
    "echo-server",
    "chat-server",
    "client",
    "echo-client",
    "load",
];

/// Runs `rselectors ARGS` to its end; its exit code and stderr, after
/// checking it printed no `listening on` (nothing was bound).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut run = Proc::spawn(args, Stdio::null());
    let status = run.wait_exit();
    assert!(
        !run.stdout().contains("listening on"),
        "{args:?}: {}",
        run.stdout()
    );
    (status.code(), run.stderr())
}

/// `rselectors ARGS` is a usage error (exit status 2) whose message
/// contains `expected`.
fn usage_error(args: &[&str], expected: &str) {
    let (code, stderr) = refused(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

#[test]
fn a_malformed_address_is_named_by_every_subcommand() {
    let cases = [
        ("nonsense", "expected HOST:PORT"),
        ("127.0.0.1", "expected HOST:PORT"),
        (
            "127.0.0.1:99999",
            "invalid port '99999': expected 0 to 65535",
        ),
        ("localhost:http", "invalid port 'http'"),
        ("::1:9999", "an IPv6 address goes in brackets: [::1]:9999"),
        ("[::g]:9999", "invalid IPv6 address '::g'"),
        (":9999", "no host"),
    ];
    for subcommand in SUBCOMMANDS {
        for (addr, why) in cases {
            let expected = format!("invalid value '{addr}' for '--addr <ADDR>': {why}");
            usage_error(&[subcommand, "--addr", addr], &expected);
        }
    }
}

#[test]
fn well_formed_addresses_get_past_the_check() {
    // Nothing listens there: the clients fail to connect, exit status 1.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (code, stderr) = refused(&["echo-client", "--addr", &addr, "--timeout", "5"]);
        assert_eq!(code, Some(1), "{addr}: {stderr}");
        assert!(stderr.contains("cannot connect to"), "{addr}: {stderr}");
    }
}

#[test]
fn an_unknown_selector_is_named_by_every_subcommand() {
    for subcommand in SUBCOMMANDS {
        usage_error(
            &[subcommand, "--selector", "bogus"],
            "invalid value 'bogus' for '--selector <KIND>': unknown selector \"bogus\"",
        );
    }
}

#[test]
fn a_duration_below_the_clocks_resolution_is_refused() {
    // A server that never answers: had the load run, it would have ended
    // at once with no messages and exit status 0.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for (subcommand, flag) in [
        ("load", "--duration"),
        ("client", "--wait"),
        ("echo-client", "--timeout"),
    ] {
        for (value, why) in [
            ("0.0000000001", "below the clock's resolution of 1 ns"),
            ("0", "must be more than 0"),
            ("nan", "expected a finite number of seconds"),
            ("soon", "expected a number of seconds"),
        ] {
            let expected = format!("invalid value '{value}' for '{flag} <");
            usage_error(&[subcommand, "--addr", &addr, flag, value], &expected);
            usage_error(&[subcommand, "--addr", &addr, flag, value], why);
        }
    }
}

#[test]
fn load_refuses_zero_counts_and_sizes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for flag in ["--conns", "--size", "--pipeline", "--chat"] {
        let expected = format!("invalid value '0' for '{flag} <");
        usage_error(&["load", "--addr", &addr, flag, "0"], &expected);
        usage_error(&["load", "--addr", &addr, flag, "0"], "0 is not in 1..=");
    }
}

#[test]
fn load_names_the_values_that_do_not_fit_together() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (code, stderr) = refused(&[
        "load",
        "--addr",
        &addr,
        "--pipeline",
        "65536",
        "--size",
        "2048",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "--pipeline 65536 times --size 2048 is 134217728 bytes in flight per connection: \
             at most 67108864"
        ),
        "{stderr}"
    );
    let (code, stderr) = refused(&["load", "--addr", &addr, "--chat", "2", "--size", "70000"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--size 70000 is over 65536, the chat server's line limit"),
        "{stderr}"
    );
}

#[test]
fn chat_server_refuses_a_max_backlog_of_zero() {
    usage_error(
        &loopback_args("chat-server", &["--max-backlog", "0"]),
        "invalid value '0' for '--max-backlog <BYTES>': must be at least 1 byte",
    );
    usage_error(
        &loopback_args("chat-server", &["--max-backlog", "lots"]),
        "invalid value 'lots' for '--max-backlog <BYTES>': expected a number of bytes",
    );
}

#[test]
fn help_documents_reuse_port_for_both_servers() {
    for server in ["echo-server", "chat-server"] {
        let mut help = Proc::spawn(&[server, "--help"], Stdio::null());
        assert!(help.wait_exit().success());
        let text = help.stdout();
        assert!(text.contains("--reuse-port"), "{server}: {text}");
        assert!(text.contains("Address already in use"), "{server}: {text}");
    }
}
