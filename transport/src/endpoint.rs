//! Endpoint names: one base address from which both channel addresses derive.
//!
//! - `ipc://<dir>/<name>` (or a bare path): channels `ipc://<dir>/<name>.h2d` and `.d2h`.
//! - `tcp://<host>:<port>`: `h2d` on `<port>`, `d2h` on `<port>+1`. The port may be omitted
//!   (`tcp://127.0.0.1`) and then comes from `COSIM_PORT`.

use std::path::PathBuf;

use crate::{Side, TransportError};

/// Environment variable giving the base TCP port when the endpoint names none.
pub const PORT_ENV: &str = "COSIM_PORT";

/// Longest `ipc://` path libzmq accepts (`sun_path` minus the NUL).
const MAX_IPC_PATH: usize = 107;

/// A parsed base endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Unix domain sockets next to this base path.
    Ipc(PathBuf),
    /// TCP: `port` for `h2d`, `port + 1` for `d2h`.
    Tcp {
        /// Host name or address to bind and connect.
        host: String,
        /// Base port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `ipc://...`, `tcp://host[:port]` or a bare path. A TCP endpoint without a port
    /// takes `port`, else `COSIM_PORT`.
    pub fn parse_with_port(s: &str, port: Option<u16>) -> Result<Self, TransportError> {
        let err = |reason: String| TransportError::Endpoint { endpoint: s.to_string(), reason };
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = match rest.rsplit_once(':') {
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
            if host.is_empty() {
                return Err(err("empty host".into()));
            }
            if port == 0 || port == u16::MAX {
                return Err(err(format!("base port {port} leaves no room for the d2h channel at port+1")));
            }
            return Ok(Self::Tcp { host, port });
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
        match side {
            Side::Host => (self.d2h(), self.h2d()),
            Side::Device => (self.h2d(), self.d2h()),
        }
    }

    fn channel(&self, suffix: &str, port_offset: u16) -> String {
        match self {
            Self::Ipc(p) => format!("ipc://{}.{suffix}", p.display()),
            Self::Tcp { host, port } => format!("tcp://{host}:{}", port + port_offset),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
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
    fn rejects_bad_endpoints() {
        for bad in ["", "tcp://h:x", "tcp://:5", "tcp://h:65535", "udp://x", "ipc://"] {
            assert!(Endpoint::parse_with_port(bad, Some(5000)).is_err(), "{bad}");
        }
        let long = format!("/tmp/{}", "x".repeat(120));
        assert!(Endpoint::parse(&long).is_err());
    }
}
