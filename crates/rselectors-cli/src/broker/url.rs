//! `--broker URL`: `redis://[[user]:password@]host:port[/db]`.
//!
//! The password never leaves this module in text: [`BrokerUrl`] displays
//! (and debug-prints) without it, and a malformed URL's error never quotes
//! the part it came in.

use std::fmt;

/// Where the password may come from instead of the URL (which other users
/// of the machine can read in the process list).
pub const PASSWORD_VAR: &str = "RSELECTORS_BROKER_PASSWORD";

/// A parsed `--broker` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// A name or an IP address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The ACL user, if given (`AUTH user password`).
    pub user: Option<String>,
    /// `AUTH`'s password: from the URL, or from [`PASSWORD_VAR`].
    pub password: Option<String>,
    /// The database (`SELECT`); 0 when not given.
    pub db: u32,
}

impl fmt::Display for BrokerUrl {
    /// The URL without the password: what logs, `list` and errors show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(user), _) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

impl BrokerUrl {
    /// Parses `text`; `env_password` (the value of [`PASSWORD_VAR`], if
    /// set) is the password when the URL has none.
    pub fn parse(text: &str, env_password: Option<String>) -> Result<BrokerUrl, String> {
        const FORM: &str = "expected redis://[[user]:password@]host:port[/db]";
        let Some(rest) = text.strip_prefix("redis://") else {
            let scheme = match text.split_once("://") {
                Some((scheme, _)) => format!("unknown scheme '{scheme}://'"),
                None => "no scheme".to_owned(),
            };
            return Err(format!(
                "{scheme}: {FORM} (rediss:// and TLS are not supported yet)"
            ));
        };
        // The authority ends at the first '/'; user info at its last '@'.
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user = decode(user).map_err(|e| format!("the user name {e}"))?;
                let password = match password {
                    Some(password) => {
                        Some(decode(password).map_err(|e| format!("the password {e}"))?)
                    }
                    None => None,
                };
                (
                    (!user.is_empty()).then_some(user),
                    password.filter(|p| !p.is_empty()),
                )
            }
        };
        let (host, port) = split_host_port(hostport).map_err(|e| format!("{e}: {FORM}"))?;
        let db = match path {
            None | Some("") => 0,
            Some(db) => db.parse().map_err(|_| {
                format!("invalid database '{db}': expected a number, as in redis://host:6379/0")
            })?,
        };
        let password = password.or(env_password.filter(|p| !p.is_empty()));
        if user.is_some() && password.is_none() {
            return Err(format!(
                "a user without a password: give it in the URL or in {PASSWORD_VAR}"
            ));
        }
        Ok(BrokerUrl {
            host,
            port,
            user,
            password,
            db,
        })
    }
}

/// `host:port` or `[v6]:port`.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]:") {
            Some((ip, port)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("invalid IPv6 address '{ip}'"));
                }
                (ip, port)
            }
            None => {
                return Err("an IPv6 address in brackets needs a port, as in [::1]:6379".to_owned())
            }
        },
        None => match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 address goes in brackets: redis://[::1]:6379".to_owned())
            }
            Some(split) => split,
            None => return Err("no port".to_owned()),
        },
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
    {
        return Err(format!("invalid host '{host}'"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_owned(), port)),
        _ => Err(format!("invalid port '{port}': expected 1 to 65535")),
    }
}

/// Percent-decodes a URL's user or password; the error does not quote it.
fn decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("has a '%' not followed by two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "has a bad '%' escape")?;
            let byte = u8::from_str_radix(hex, 16)
                .map_err(|_| "has a '%' not followed by two hex digits")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(text, None)
    }

    #[test]
    fn host_port_user_password_and_db() {
        let url = parse("redis://alice:s%40cret@cache.example:6380/2").unwrap();
        assert_eq!(url.host, "cache.example");
        assert_eq!(url.port, 6380);
        assert_eq!(url.user.as_deref(), Some("alice"));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert_eq!(url.db, 2);
        assert_eq!(url.to_string(), "redis://alice@cache.example:6380/2");
        let url = parse("redis://:pw@127.0.0.1:6379").unwrap();
        assert_eq!(
            (url.user.as_deref(), url.password.as_deref()),
            (None, Some("pw"))
        );
        assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6379");
        let url = parse("redis://[::1]:6379/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("::1", 6379, 0));
        assert_eq!(url.to_string(), "redis://[::1]:6379");
    }

    #[test]
    fn the_environment_gives_the_password_when_the_url_does_not() {
        let url = BrokerUrl::parse("redis://h:1", Some("env".into())).unwrap();
        assert_eq!(url.password.as_deref(), Some("env"));
        let url = BrokerUrl::parse("redis://:url@h:1", Some("env".into())).unwrap();
        assert_eq!(url.password.as_deref(), Some("url"));
        let url = BrokerUrl::parse("redis://bob@h:1", Some("env".into())).unwrap();
        assert_eq!(
            (url.user.as_deref(), url.password.as_deref()),
            (Some("bob"), Some("env"))
        );
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_the_password() {
        for (text, expected) in [
            ("http://h:1", "unknown scheme 'http://'"),
            ("rediss://h:1", "unknown scheme 'rediss://'"),
            ("h:1", "no scheme"),
            ("redis://h", "no port"),
            ("redis://h:0", "invalid port '0'"),
            ("redis://h:65536", "invalid port '65536'"),
            ("redis://h:x", "invalid port 'x'"),
            ("redis://:1", "no host"),
            ("redis://::1:6379", "in brackets"),
            ("redis://[::g]:1", "invalid IPv6 address"),
            ("redis://h:1/x", "invalid database 'x'"),
            ("redis://bob@h:1", "a user without a password"),
            ("redis://h o:1", "invalid host"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = parse("redis://:hunter2%zz@h:1").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        let error = parse("redis://u:hunter2@h:99999").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        let url = parse("redis://u:hunter2@h:1").unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }
}
