//! Access control on the link (docs/protocol.md, "Access control"). Every rule lives here:
//!
//! - **ipc**: sockets are protected by the file system. Default endpoints live in a
//!   [`PrivateDir`] (mode 0700, random name, under `$XDG_RUNTIME_DIR` or the temp directory),
//!   and every socket this side binds is made 0600 at once. Only the same user (and root) can
//!   connect. (The vendored libzmq is built without `ZMQ_HAVE_SO_PEERCRED`: it has neither
//!   `ZMQ_IPC_FILTER_UID` nor peer credentials in ZAP requests, so a uid check there is impossible.)
//! - **tcp on loopback** (both the bind host and the peer): allowed without a key.
//! - **tcp beyond loopback**: refused unless both sides have the same key (a file named by
//!   `COSIM_KEY_FILE` or [`LinkKey::File`]). With a key, each receiving socket is a ZeroMQ PLAIN
//!   server whose ZAP handler (a thread per transport) accepts only that key, and each sending
//!   socket presents it. This runs once per connection, never per message. It authenticates; it
//!   does not encrypt (the vendored libzmq has no CURVE).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Endpoint, TransportError};

/// Environment variable naming the key file for tcp links that leave loopback.
pub const KEY_FILE_ENV: &str = "COSIM_KEY_FILE";

/// Shortest key accepted, in characters (32 hex digits = 128 bits).
pub const MIN_KEY_LEN: usize = 32;

/// Longest key accepted (a ZeroMQ PLAIN password is at most 255 bytes).
const MAX_KEY_LEN: usize = 255;

/// ZeroMQ PLAIN user name both sides use; only the key is secret.
const PLAIN_USER: &str = "cosim";

/// ZAP domain set on receiving sockets.
const ZAP_DOMAIN: &str = "cosim";

/// Where the key for tcp links comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LinkKey {
    /// The file named by `COSIM_KEY_FILE` if that is set and not empty, else no key.
    #[default]
    FromEnv,
    /// No key: tcp must stay on loopback.
    None,
    /// This key file.
    File(PathBuf),
}

/// A loaded key. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key(String);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn access(reason: String) -> TransportError {
    TransportError::Access(reason)
}

/// Reads the key `src` names, if any.
pub(crate) fn load_key(src: &LinkKey) -> Result<Option<Key>, TransportError> {
    let path = match src {
        LinkKey::None => return Ok(None),
        LinkKey::File(p) => p.clone(),
        LinkKey::FromEnv => match std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => return Ok(None),
        },
    };
    read_key_file(&path).map(Some)
}

/// A key file: a regular file of this user, not readable or writable by anyone else, holding
/// one line of 32 to 255 printable ASCII characters (no spaces).
fn read_key_file(path: &Path) -> Result<Key, TransportError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| access(format!("cannot read key file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(access(format!("key file {shown} is not a regular file")));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(access(format!("key file {shown} belongs to uid {}, not to this user (uid {me})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(access(format!(
            "key file {shown} has mode {:o}: other users could read it; `chmod 600 {shown}`",
            meta.mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| access(format!("cannot read key file {shown}: {e}")))?;
    let key = text.trim();
    if key.len() < MIN_KEY_LEN || key.len() > MAX_KEY_LEN {
        return Err(access(format!(
            "key in {shown} is {} characters; it must be {MIN_KEY_LEN} to {MAX_KEY_LEN} (e.g. 64 hex digits)",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(access(format!("key in {shown} must be one line of printable ASCII without spaces")));
    }
    Ok(Key(key.to_string()))
}

/// Writes a new random key (64 hex digits) to `path`, which must not exist, with mode 0600.
pub fn generate_key_file(path: &Path) -> Result<(), TransportError> {
    let key = hex(&random_bytes::<32>()?);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| access(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(format!("{key}\n").as_bytes())
        .map_err(|e| access(format!("cannot write key file {}: {e}", path.display())))
}

/// The rule: which key, if any, a transport on `endpoint` uses. ipc never uses one (the file
/// system protects it); tcp uses the key when there is one, and refuses to leave loopback
/// without one.
pub(crate) fn key_for(endpoint: &Endpoint, src: &LinkKey) -> Result<Option<Key>, TransportError> {
    if let Endpoint::Ipc(p) = endpoint {
        if p.as_os_str().as_encoded_bytes().starts_with(b"@") {
            return Err(access(format!(
                "{endpoint} is an abstract Unix socket, which has no permissions (any local process could \
                 connect); use a path"
            )));
        }
        return Ok(None);
    }
    let key = load_key(src)?;
    if key.is_none() && !endpoint.is_local() {
        return Err(access(format!(
            "{endpoint} reaches beyond this machine's loopback, so it needs a shared key: create one \
             (64 hex digits, mode 600) on both machines and set {KEY_FILE_ENV}=<file> for both sides \
             (docs/protocol.md, \"Access control\")"
        )));
    }
    Ok(key)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TransportError> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`, which we own.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(access(format!("getrandom: {e}")));
        }
        got += n as usize;
    }
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where private directories are made: `$XDG_RUNTIME_DIR` if it is set to an absolute
/// directory of this user with mode 0700 (as the XDG spec requires), else the temp directory.
pub fn private_base() -> PathBuf {
    private_base_from(std::env::var_os("XDG_RUNTIME_DIR"))
}

fn private_base_from(xdg: Option<OsString>) -> PathBuf {
    if let Some(d) = xdg.map(PathBuf::from).filter(|d| d.is_absolute()) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if let Ok(m) = std::fs::metadata(&d) {
            if m.is_dir() && m.uid() == me && m.mode() & 0o777 == 0o700 {
                return d;
            }
        }
    }
    std::env::temp_dir()
}

/// A fresh directory only this user can enter (mode 0700, random name `cosim-<prefix>-<hex>`),
/// for ipc sockets and key files. Removed with its contents on drop.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `cosim-<prefix>-<random>` under [`private_base`].
    pub fn new(prefix: &str) -> Result<Self, TransportError> {
        Self::new_in(&private_base(), prefix)
    }

    /// Creates `cosim-<prefix>-<random>` under `base`.
    pub fn new_in(base: &Path, prefix: &str) -> Result<Self, TransportError> {
        for _ in 0..8 {
            let path = base.join(format!("cosim-{prefix}-{}", hex(&random_bytes::<8>()?)));
            // mkdir fails on any existing name (a symlink too), so the directory is ours.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(access(format!("cannot create a private directory in {}: {e}", base.display()))),
            }
            let dir = Self { path };
            // The umask can only have removed bits; set exactly 0700.
            std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| access(format!("cannot chmod {}: {e}", dir.path.display())))?;
            return Ok(dir);
        }
        Err(access(format!("cannot find a free directory name in {}", base.display())))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ipc://<dir>/<name>`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("ipc://{}/{name}", self.path.display())
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// After binding `ipc://<path>`: makes the socket 0600 (connecting needs write permission), and
/// warns if its directory lets other users replace it.
pub(crate) fn protect_ipc_socket(bind_addr: &str) -> Result<(), TransportError> {
    let Some(path) = bind_addr.strip_prefix("ipc://").map(Path::new) else { return Ok(()) };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| access(format!("cannot restrict {} to this user: {e}", path.display())))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(m) = std::fs::metadata(dir) {
            if m.mode() & 0o022 != 0 {
                tracing::warn!(target: "cosim::access", dir = %dir.display(), mode = format!("{:o}", m.mode() & 0o7777),
                    "ipc directory is writable by other users, who could replace the sockets; \
                     use a private directory (the default when no endpoint is given)");
            }
        }
    }
    Ok(())
}

/// Socket options of a keyed tcp link: the receiving socket is a PLAIN server checked by ZAP.
pub(crate) fn apply_key(rx: &zmq::Socket, tx: &zmq::Socket, key: &Key) -> Result<(), TransportError> {
    let e = |source| TransportError::Zmq { op: "setsockopt (access control)", source };
    rx.set_zap_domain(ZAP_DOMAIN).map_err(e)?;
    rx.set_plain_server(true).map_err(e)?;
    tx.set_plain_username(Some(PLAIN_USER)).map_err(e)?;
    tx.set_plain_password(Some(&key.0)).map_err(e)?;
    Ok(())
}

/// What the access thread shares with its transport.
#[derive(Debug, Default)]
struct Shared {
    /// Incoming connections refused by the ZAP handler.
    rejected: AtomicU64,
    /// Our outgoing connection was refused by the peer (wrong key, or the peer has none).
    refused_by_peer: AtomicU64,
    /// Set when the send socket must reconnect: libzmq ends a connection that failed its
    /// handshake for good instead of retrying.
    redial: AtomicBool,
}

/// The access thread of one keyed transport. It is the ZAP handler of the transport's ZeroMQ
/// context (RFC 27, `inproc://zeromq.zap.01`): accepts PLAIN connections that present the key,
/// rejects everything else. It also watches the send socket's handshakes, so a refusal by the
/// peer is logged and the connection retried. Stopped and joined on drop.
pub(crate) struct AccessThread {
    stop: zmq::Socket,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
const STOP_ENDPOINT: &str = "inproc://cosim-access-stop";
const TX_MONITOR_ENDPOINT: &str = "inproc://cosim-access-tx-monitor";

impl AccessThread {
    /// Binds the handler in `ctx` and starts watching `tx`; call before `rx` binds and before
    /// `tx` connects.
    pub(crate) fn start(ctx: &zmq::Context, tx: &zmq::Socket, key: Key, label: String) -> Result<Self, TransportError> {
        let e = |op| move |source| TransportError::Zmq { op, source };
        let rep = ctx.socket(zmq::REP).map_err(e("socket (ZAP)"))?;
        rep.set_linger(0).map_err(e("setsockopt (ZAP)"))?;
        rep.bind(ZAP_ENDPOINT).map_err(e("bind (ZAP)"))?;
        let events = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw();
        tx.monitor(TX_MONITOR_ENDPOINT, i32::from(events)).map_err(e("zmq_socket_monitor"))?;
        let monitor = ctx.socket(zmq::PAIR).map_err(e("socket (monitor)"))?;
        monitor.set_linger(0).map_err(e("setsockopt (monitor)"))?;
        monitor.connect(TX_MONITOR_ENDPOINT).map_err(e("connect (monitor)"))?;
        let stop_rx = ctx.socket(zmq::PAIR).map_err(e("socket (ZAP)"))?;
        stop_rx.bind(STOP_ENDPOINT).map_err(e("bind (ZAP)"))?;
        let stop = ctx.socket(zmq::PAIR).map_err(e("socket (ZAP)"))?;
        stop.set_linger(0).map_err(e("setsockopt (ZAP)"))?;
        stop.connect(STOP_ENDPOINT).map_err(e("connect (ZAP)"))?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cosim-access".into())
            .spawn(move || access_loop(&rep, &monitor, &stop_rx, &key, &sh, &label))
            .map_err(|e| access(format!("cannot start the access thread: {e}")))?;
        Ok(Self { stop, thread: Some(thread), shared })
    }

    /// Incoming connections refused so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Times the peer refused our outgoing connection.
    pub(crate) fn refused_by_peer(&self) -> u64 {
        self.shared.refused_by_peer.load(Ordering::Relaxed)
    }

    /// True after the peer refused our connection: the caller reconnects its send socket
    /// and calls [`Self::clear_redial`].
    pub(crate) fn redial_pending(&self) -> bool {
        self.shared.redial.load(Ordering::Relaxed)
    }

    pub(crate) fn clear_redial(&self) {
        self.shared.redial.store(false, Ordering::Relaxed);
    }
}

impl Drop for AccessThread {
    fn drop(&mut self) {
        let _ = self.stop.send(&b"stop"[..], zmq::DONTWAIT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Logs the first few of a repeated event, then at most one line per 10 s (a refused peer
/// retries every 200 ms).
struct RateLimit {
    count: u64,
    logged_at: u64,
    last: Instant,
}

impl RateLimit {
    fn new() -> Self {
        Self { count: 0, logged_at: 0, last: Instant::now() }
    }

    /// Counts one event; `Some(events since the last line)` if this one should be logged.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.count > 3 && self.last.elapsed() < Duration::from_secs(10) {
            return None;
        }
        let since = self.count - self.logged_at;
        self.logged_at = self.count;
        self.last = Instant::now();
        Some(since)
    }
}

/// Constant-time comparison, so timing does not reveal how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decides one ZAP request (frames after the REP envelope): `(status code, status text)`.
fn decide(frames: &[Vec<u8>], key: &Key) -> (&'static str, &'static str) {
    // version, request id, domain, address, routing id, mechanism, credentials...
    match frames {
        [v, _, _, _, _, mech, user, pass] if v == b"1.0" && mech == b"PLAIN" => {
            if same_secret(pass, key.0.as_bytes()) && user == PLAIN_USER.as_bytes() {
                ("200", "OK")
            } else {
                ("400", "wrong key")
            }
        }
        [v, ..] if v == b"1.0" => ("400", "a key is required"),
        _ => ("500", "malformed ZAP request"),
    }
}

fn access_loop(rep: &zmq::Socket, monitor: &zmq::Socket, stop: &zmq::Socket, key: &Key, shared: &Shared, label: &str) {
    let (mut refusals, mut peer_refusals) = (RateLimit::new(), RateLimit::new());
    loop {
        let mut items =
            [rep.as_poll_item(zmq::POLLIN), monitor.as_poll_item(zmq::POLLIN), stop.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, -1) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(_) => return,
        }
        if items[2].is_readable() {
            return;
        }
        if items[0].is_readable() {
            let Ok(frames) = rep.recv_multipart(zmq::DONTWAIT) else { continue };
            let (code, text) = decide(&frames, key);
            let request_id = frames.get(1).cloned().unwrap_or_default();
            let user_id: &[u8] = if code == "200" { PLAIN_USER.as_bytes() } else { b"" };
            let reply: [&[u8]; 6] = [b"1.0", &request_id, code.as_bytes(), text.as_bytes(), user_id, b""];
            if rep.send_multipart(reply, 0).is_err() {
                return;
            }
            if code != "200" {
                let total = shared.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(since) = refusals.hit() {
                    let peer = frames.get(3).map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
                    tracing::warn!(target: "cosim::access", link = label, %peer, reason = text, total, since,
                        "refused an incoming connection");
                }
            }
        }
        if items[1].is_readable() {
            let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) else { continue };
            let Some(ev) = frames.first().filter(|f| f.len() == 6) else { continue };
            let (event, value) = (u16::from_le_bytes([ev[0], ev[1]]), u32::from_le_bytes([ev[2], ev[3], ev[4], ev[5]]));
            shared.redial.store(true, Ordering::Relaxed);
            let total = shared.refused_by_peer.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(since) = peer_refusals.hit() {
                let addr = frames.get(1).map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
                let why = if event == zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() {
                    format!("it refused our key (ZAP status {value})")
                } else {
                    format!("handshake protocol error {value:#x} (0x11000003 = mechanism mismatch: the peer has no key)")
                };
                tracing::warn!(target: "cosim::access", link = label, peer = %addr, total, since,
                    "the peer did not accept our connection: {why}; both sides need the same {KEY_FILE_ENV}; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key("k".repeat(40))
    }

    fn req(mech: &str, creds: &[&str]) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = ["1.0", "1", "cosim", "10.0.0.9", "", mech].iter().map(|s| s.as_bytes().to_vec()).collect();
        v.extend(creds.iter().map(|s| s.as_bytes().to_vec()));
        v
    }

    #[test]
    fn zap_accepts_only_the_key() {
        let k = "k".repeat(40);
        assert_eq!(decide(&req("PLAIN", &["cosim", &k]), &key()).0, "200");
        assert_eq!(decide(&req("PLAIN", &["cosim", &"k".repeat(39)]), &key()).0, "400");
        assert_eq!(decide(&req("PLAIN", &["cosim", &format!("{k}x")]), &key()).0, "400");
        assert_eq!(decide(&req("PLAIN", &["other", &k]), &key()).0, "400");
        assert_eq!(decide(&req("NULL", &[]), &key()).0, "400");
        assert_eq!(decide(&req("CURVE", &["xxxxxxxx"]), &key()).0, "400");
        assert_eq!(decide(&[b"2.0".to_vec()], &key()).0, "500");
        assert_eq!(decide(&[], &key()).0, "500");
    }

    #[test]
    fn key_debug_does_not_print_it() {
        assert_eq!(format!("{:?}", key()), "Key(..)");
    }

    #[test]
    fn xdg_runtime_dir_is_used_only_if_private() {
        assert_eq!(private_base_from(None), std::env::temp_dir());
        assert_eq!(private_base_from(Some("relative/dir".into())), std::env::temp_dir());
        assert_eq!(private_base_from(Some("/nonexistent-cosim-xdg".into())), std::env::temp_dir());
        let d = PrivateDir::new_in(&std::env::temp_dir(), "xdg-test").unwrap();
        assert_eq!(private_base_from(Some(d.path().into())), d.path());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_base_from(Some(d.path().into())), std::env::temp_dir());
    }

    #[test]
    fn leaving_loopback_needs_a_key() {
        let none = LinkKey::None;
        assert_eq!(key_for(&Endpoint::parse("tcp://127.0.0.1:7000").unwrap(), &none).unwrap(), None);
        assert_eq!(key_for(&Endpoint::parse("ipc:///tmp/x/y").unwrap(), &none).unwrap(), None);
        assert!(key_for(&Endpoint::parse("ipc://@abstract").unwrap(), &none).is_err());
        for ep in ["tcp://0.0.0.0:7000?peer=10.0.0.2", "tcp://10.0.0.1:7000", "tcp://127.0.0.1:7000?peer=10.0.0.2"] {
            let e = key_for(&Endpoint::parse(ep).unwrap(), &none).unwrap_err().to_string();
            assert!(e.contains(KEY_FILE_ENV), "{e}");
        }
    }
}
