//! Endpoint names: one base address from which both channel addresses derive.
//!
//! - `ipc://<dir>/<name>` (or a bare path): channels `ipc://<dir>/<name>.h2d` and `.d2h`.
//! - `tcp://<host>:<port>`: `h2d` on `<port>`, `d2h` on `<port>+1`. The port may be omitted
//!   (`tcp://127.0.0.1`) and then comes from `COSIM_PORT`. The host may be omitted
//!   (`tcp://:7000`) and is then `127.0.0.1`: nothing binds beyond loopback unless asked to.
//! - `tcp://<host>:<port>?peer=<peer-host>`: bind on `<host>`, send to `<peer-host>` (two
//!   machines). Which tcp endpoints need a key is decided in `access.rs` (docs/protocol.md,
//!   "Access control").

use std::path::PathBuf;

use crate::{Side, TransportError};

/// Environment variable giving the base TCP port when the endpoint names none.
pub const PORT_ENV: &str = "COSIM_PORT";

/// Longest `ipc://` path libzmq accepts (`sun_path` minus the NUL).
const MAX_IPC_PATH: usize = 107;

/// The host a tcp endpoint without one binds and connects to.
pub const DEFAULT_TCP_HOST: &str = "127.0.0.1";

/// A parsed base endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Unix domain sockets next to this base path.
    Ipc(PathBuf),
    /// TCP: `port` for `h2d`, `port + 1` for `d2h`.
    Tcp {
        /// Address (or interface) this side binds its receive channel on; also where it sends
        /// unless `peer` is given.
        host: String,
        /// Base port.
        port: u16,
        /// Where the other side listens, if not on `host` (`?peer=` in the endpoint string).
        peer: Option<String>,
    },
}

impl Endpoint {
    /// Parses `ipc://...`, `tcp://[host][:port][?peer=<peer-host>]` or a bare path. A TCP
    /// endpoint without a port takes `port`, else `COSIM_PORT`; without a host, `127.0.0.1`.
    pub fn parse_with_port(s: &str, port: Option<u16>) -> Result<Self, TransportError> {
        let err = |reason: String| TransportError::Endpoint { endpoint: s.to_string(), reason };
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (rest, peer) = match rest.split_once('?') {
                Some((r, q)) => match q.strip_prefix("peer=") {
                    Some(p) if !p.is_empty() && !p.contains([':', '?', '/']) || is_bracketed_v6(p) => (r, Some(p.to_string())),
                    _ => return Err(err(format!("unknown option {q:?}; the only one is ?peer=<host> (without a port)"))),
                },
                None => (rest, None),
            };
            // `[v6]:port`, `host:port`, `:port`, `host` or nothing.
            let (host, port) = match rest.rsplit_once(':').filter(|(h, _)| !h.ends_with(':') && (h.is_empty() || !h.starts_with('[') || h.ends_with(']'))) {
                Some((h, p)) => {
                    let p: u16 = p.parse().map_err(|_| err(format!("port {p:?} is not a number 1..65534")))?;
                    (h.to_string(), p)
                }
                None => {
                    let p = match port {
                        Some(p) => p,
                        None => std::env::var(PORT_ENV)
                            .map_err(|_| err(format!("no port given and {PORT_ENV} is not set")))?
                            .parse()
                            .map_err(|_| err(format!("{PORT_ENV} is not a port number")))?,
                    };
                    (rest.to_string(), p)
                }
            };
            let host = if host.is_empty() { DEFAULT_TCP_HOST.to_string() } else { host };
            if port == 0 || port == u16::MAX {
                return Err(err(format!("base port {port} leaves no room for the d2h channel at port+1")));
            }
            if is_wildcard(&host) && peer.is_none() {
                return Err(err(format!(
                    "{host} binds every interface but names no machine to send to; add ?peer=<the other machine>"
                )));
            }
            if peer.as_deref().is_some_and(is_wildcard) {
                return Err(err("?peer= must name the other machine, not a wildcard".into()));
            }
            return Ok(Self::Tcp { host, port, peer });
        }
        let path = s.strip_prefix("ipc://").unwrap_or(s);
        if path.is_empty() || path.contains("://") {
            return Err(err("expected ipc://<path>, tcp://<host>:<port> or a path".into()));
        }
        if path.len() + 4 > MAX_IPC_PATH {
            return Err(err(format!(
                "ipc path is {} bytes; with the \".h2d\" suffix it must stay within {MAX_IPC_PATH} (Unix socket limit)",
                path.len()
            )));
        }
        Ok(Self::Ipc(PathBuf::from(path)))
    }

    /// [`Endpoint::parse_with_port`] without an explicit port.
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        Self::parse_with_port(s, None)
    }

    /// ZeroMQ address of the host-to-device channel.
    pub fn h2d(&self) -> String {
        self.channel("h2d", 0)
    }

    /// ZeroMQ address of the device-to-host channel.
    pub fn d2h(&self) -> String {
        self.channel("d2h", 1)
    }

    /// (address this side binds and receives on, address it connects and sends to).
    pub fn addrs_for(&self, side: Side) -> (String, String) {
        let (recv, send) = match side {
            Side::Host => (("d2h", 1), ("h2d", 0)),
            Side::Device => (("h2d", 0), ("d2h", 1)),
        };
        let send_addr = match self {
            Self::Tcp { peer: Some(peer), port, .. } => format!("tcp://{peer}:{}", port + send.1),
            _ => self.channel(send.0, send.1),
        };
        (self.channel(recv.0, recv.1), send_addr)
    }

    /// True if every address of this endpoint is on this machine's loopback (or it is ipc).
    /// Anything else reaches other machines and needs a key (docs/protocol.md, "Access control").
    pub fn is_local(&self) -> bool {
        match self {
            Self::Ipc(_) => true,
            Self::Tcp { host, peer, .. } => is_loopback(host) && peer.iter().all(|p| is_loopback(p)),
        }
    }

    fn channel(&self, suffix: &str, port_offset: u16) -> String {
        match self {
            Self::Ipc(p) => format!("ipc://{}.{suffix}", p.display()),
            Self::Tcp { host, port, .. } => format!("tcp://{host}:{}", port + port_offset),
        }
    }
}

fn is_bracketed_v6(h: &str) -> bool {
    h.len() > 2 && h.starts_with('[') && h.ends_with(']')
}

/// `localhost`, `lo`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h == "lo" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// ZeroMQ's "every interface" binds.
fn is_wildcard(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "*" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_unspecified())
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Self::Tcp { host, port, peer: None } => write!(f, "tcp://{host}:{port}"),
            Self::Tcp { host, port, peer: Some(p) } => write!(f, "tcp://{host}:{port}?peer={p}"),
        }
    }
}


/// A base port P with P and P + 1 both free on `host` right now (a tcp endpoint uses P for
/// `h2d` and P + 1 for `d2h`). Free when asked: the caller binds them moments later.
pub fn free_port_pair(host: &str) -> std::io::Result<u16> {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind((host, 0))?;
        let port = a.local_addr()?.port();
        if port < u16::MAX - 1 && std::net::TcpListener::bind((host, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no two consecutive free TCP ports on {host}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_channels() {
        let e = Endpoint::parse("ipc:///tmp/x/accel0").unwrap();
        assert_eq!(e.h2d(), "ipc:///tmp/x/accel0.h2d");
        assert_eq!(e.d2h(), "ipc:///tmp/x/accel0.d2h");
        assert_eq!(Endpoint::parse("/tmp/a").unwrap(), Endpoint::Ipc("/tmp/a".into()));
        let t = Endpoint::parse("tcp://127.0.0.1:7000").unwrap();
        assert_eq!(t.h2d(), "tcp://127.0.0.1:7000");
        assert_eq!(t.d2h(), "tcp://127.0.0.1:7001");
        assert_eq!(t.addrs_for(Side::Device), (t.h2d(), t.d2h()));
        let t = Endpoint::parse_with_port("tcp://localhost", Some(9000)).unwrap();
        assert_eq!(t.d2h(), "tcp://localhost:9001");
    }

    #[test]
    fn tcp_without_a_host_is_loopback() {
        let t = Endpoint::parse("tcp://:7000").unwrap();
        assert_eq!(t, Endpoint::Tcp { host: "127.0.0.1".into(), port: 7000, peer: None });
        assert_eq!(Endpoint::parse_with_port("tcp://", Some(7100)).unwrap().h2d(), "tcp://127.0.0.1:7100");
        assert!(t.is_local());
        assert!(Endpoint::parse("tcp://localhost:7000").unwrap().is_local());
        assert!(Endpoint::parse("tcp://[::1]:7000").unwrap().is_local());
        assert!(Endpoint::parse("ipc:///tmp/x/y").unwrap().is_local());
        assert!(!Endpoint::parse("tcp://10.0.0.1:7000").unwrap().is_local());
        assert!(!Endpoint::parse("tcp://127.0.0.1:7000?peer=10.0.0.2").unwrap().is_local());
    }

    #[test]
    fn peer_host_is_where_this_side_sends() {
        let e = Endpoint::parse("tcp://0.0.0.0:7000?peer=10.0.0.2").unwrap();
        assert!(!e.is_local());
        assert_eq!(e.to_string(), "tcp://0.0.0.0:7000?peer=10.0.0.2");
        assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
        assert_eq!(e.addrs_for(Side::Device), ("tcp://0.0.0.0:7000".into(), "tcp://10.0.0.2:7001".into()));
        assert_eq!(e.addrs_for(Side::Host), ("tcp://0.0.0.0:7001".into(), "tcp://10.0.0.2:7000".into()));
        let p = Endpoint::parse_with_port("tcp://10.0.0.1?peer=[fd00::2]", Some(9000)).unwrap();
        assert_eq!(p.addrs_for(Side::Host), ("tcp://10.0.0.1:9001".into(), "tcp://[fd00::2]:9000".into()));
        let v6 = Endpoint::parse("tcp://[::1]:7000").unwrap();
        assert_eq!(v6.h2d(), "tcp://[::1]:7000");
    }

    #[test]
    fn rejects_bad_endpoints() {
        for bad in [
            "",
            "tcp://h:x",
            "tcp://h:65535",
            "udp://x",
            "ipc://",
            "tcp://0.0.0.0:7000",
            "tcp://*:7000",
            "tcp://h:7000?peer=",
            "tcp://h:7000?peer=x:5",
            "tcp://h:7000?peer=*",
            "tcp://h:7000?bind=x",
        ] {
            assert!(Endpoint::parse_with_port(bad, Some(5000)).is_err(), "{bad}");
        }
        let long = format!("/tmp/{}", "x".repeat(120));
        assert!(Endpoint::parse(&long).is_err());
    }
}
