//! Access control on the link (docs/protocol.md, "Access control"): private ipc directories,
//! loopback-only tcp by default, and keyed tcp that refuses peers without the key. Every wait is
//! bounded. `unsafe` (libc calls) only in `euid`, `connect_as_nobody` and `local_ipv4_addrs`.
//! The one test that needs a peer process (a key from `COSIM_KEY_FILE`) is in
//! test-peers/tests/access_control.rs, next to the `cosim-zmq-peer` binary it spawns.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cosim_transport::{
    generate_key_file, private_base, Endpoint, LinkKey, PrivateDir, Side, Transport, TransportError, ZmqOptions,
    ZmqTransport, KEY_FILE_ENV,
};

/// How long a receiver must see nothing from a refused peer.
const QUIET: Duration = Duration::from_millis(500);
const STEP: Duration = Duration::from_secs(10);

fn opts(key: LinkKey) -> ZmqOptions {
    ZmqOptions { key, send_timeout: Duration::from_millis(500), ..ZmqOptions::default() }
}

fn open(ep: &str, side: Side, key: LinkKey) -> Result<ZmqTransport> {
    Ok(ZmqTransport::open(&Endpoint::parse(ep)?, side, &opts(key))?)
}


#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Waits until `f` holds, at most `STEP`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + STEP;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out after {STEP:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The first frame within `STEP`, failing if none comes.
fn recv_some(t: &mut ZmqTransport, what: &str) -> Result<Vec<u8>> {
    t.recv_frame(STEP)?.with_context(|| format!("{what} did not arrive within {STEP:?}"))
}

#[test]
fn private_dir_is_0700_unpredictable_and_removed() -> Result<()> {
    let a = PrivateDir::new("acl")?;
    let b = PrivateDir::new("acl")?;
    assert_ne!(a.path(), b.path(), "names are random");
    for d in [&a, &b] {
        assert_eq!(mode(d.path()), 0o700, "{}", d.path().display());
        assert_eq!(std::fs::metadata(d.path())?.uid(), euid());
        assert_eq!(d.path().parent(), Some(private_base().as_path()));
        assert!(d.path().file_name().unwrap().to_str().unwrap().starts_with("cosim-acl-"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        eprintln!("XDG_RUNTIME_DIR={x:?}, private dirs under {}", private_base().display());
    }
    let ep = a.endpoint("dev");
    assert_eq!(ep, format!("ipc://{}/dev", a.path().display()));
    let p = a.path().to_path_buf();
    drop(a);
    assert!(!p.exists(), "removed on drop");
    Ok(())
}

/// Tries to connect to the Unix socket `path` as user and group 65534 (nobody) in a forked
/// child; returns the child's errno (0 = connected).
#[allow(unsafe_code)]
fn connect_as_nobody(path: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child calls only async-signal-safe functions (setgroups, setgid, setuid,
    // socket, connect, _exit) on memory prepared before the fork; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let err = |step: i32| libc::_exit(100 + step);
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 {
                err(1);
            }
            if libc::setuid(65534) != 0 {
                err(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                err(3);
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) == 0 {
                libc::_exit(0);
            }
            libc::_exit(*libc::__errno_location() & 0x3f);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status));
        let code = libc::WEXITSTATUS(status);
        assert!(code < 100, "child could not drop privileges (step {})", code - 100);
        code
    }
}

#[test]
fn ipc_sockets_are_0600_and_other_users_cannot_connect() -> Result<()> {
    let private = PrivateDir::new("acl-ipc")?;
    // Also an explicit directory that anyone may enter: the 0600 socket still keeps others out.
    let open_dir = PrivateDir::new("acl-ipc-open")?;
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for dir in [&private, &open_dir] {
        let ep = dir.endpoint("dev");
        let mut dev = open(&ep, Side::Device, LinkKey::None)?;
        let sock = dir.path().join("dev.h2d");
        let meta = std::fs::metadata(&sock)?;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600, "{}", sock.display());
        if euid() == 0 {
            let errno = connect_as_nobody(&sock);
            assert_eq!(errno, libc::EACCES, "another user's connect to {} gave errno {errno}", sock.display());
        } else {
            eprintln!("not root: cannot switch to another user here; checked the modes only");
        }
        // The same user's peer gets through.
        let mut host = open(&ep, Side::Host, LinkKey::None)?;
        host.send_frame(b"from the peer")?;
        assert_eq!(recv_some(&mut dev, "the peer's frame")?, b"from the peer");
    }
    Ok(())
}

#[test]
fn tcp_without_a_host_binds_loopback_only() -> Result<()> {
    let port = cosim_transport::free_port_pair("0.0.0.0").unwrap();
    let dev = open(&format!("tcp://:{port}"), Side::Device, LinkKey::None)?;
    assert_eq!(dev.bound_addr()?, format!("tcp://127.0.0.1:{port}"));
    assert!(!dev.keyed());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // Every non-loopback IPv4 address of this machine is refused.
    let mut checked = 0;
    for ip in local_ipv4_addrs() {
        if ip.is_loopback() {
            continue;
        }
        let r = std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2));
        assert!(r.is_err(), "{ip}:{port} accepted a connection");
        checked += 1;
    }
    eprintln!("checked {checked} non-loopback address(es)");
    Ok(())
}

#[allow(unsafe_code)]
fn local_ipv4_addrs() -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we walk read-only and free once with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

#[test]
fn leaving_loopback_without_a_key_is_refused_before_binding() -> Result<()> {
    let port = cosim_transport::free_port_pair("0.0.0.0").unwrap();
    for ep in [format!("tcp://0.0.0.0:{port}?peer=127.0.0.1"), format!("tcp://127.0.0.1:{port}?peer=192.0.2.1")] {
        let e = open(&ep, Side::Device, LinkKey::None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(KEY_FILE_ENV) && msg.contains("Access control"), "{msg}");
        assert!(matches!(e.downcast_ref::<TransportError>(), Some(TransportError::Access(_))), "{e:?}");
    }
    // Nothing was bound.
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
    Ok(())
}

#[test]
fn key_files_must_be_private_and_long_enough() -> Result<()> {
    let dir = PrivateDir::new("acl-keys")?;
    let good = dir.path().join("good.key");
    generate_key_file(&good)?;
    assert_eq!(mode(&good), 0o600);
    let text = std::fs::read_to_string(&good)?;
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(generate_key_file(&good).is_err(), "never overwrites a key");
    let port = cosim_transport::free_port_pair("0.0.0.0").unwrap();
    let ep = format!("tcp://0.0.0.0:{port}?peer=127.0.0.1");
    let dev = open(&ep, Side::Device, LinkKey::File(good.clone()))?;
    assert!(dev.keyed());
    drop(dev);
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644))?;
    let e = open(&ep, Side::Device, LinkKey::File(good.clone())).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    let short = dir.path().join("short.key");
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&short)?.write_all(b"0123456789\n")?;
    let e = open(&ep, Side::Device, LinkKey::File(short)).unwrap_err().to_string();
    assert!(e.contains("32 to 255"), "{e}");
    let e = open(&ep, Side::Device, LinkKey::File(dir.path().join("missing"))).unwrap_err().to_string();
    assert!(e.contains("cannot read key file"), "{e}");
    Ok(())
}

/// A raw ZeroMQ PUSH at `addr`, optionally presenting a PLAIN password, that sends `frame`.
fn intruder(ctx: &zmq::Context, addr: &str, password: Option<&str>, frame: &[u8]) -> Result<zmq::Socket> {
    let s = ctx.socket(zmq::PUSH)?;
    s.set_linger(0)?;
    s.set_sndtimeo(0)?;
    if let Some(p) = password {
        s.set_plain_username(Some("cosim"))?;
        s.set_plain_password(Some(p))?;
    }
    s.connect(addr)?;
    // Queued until a connection is up; a refused connection never takes it.
    let _ = s.send(frame, zmq::DONTWAIT);
    Ok(s)
}

#[test]
fn keyed_tcp_refuses_peers_without_the_key_and_delivers_the_right_one() -> Result<()> {
    let dir = PrivateDir::new("acl-keyed")?;
    let (right, wrong) = (dir.path().join("right.key"), dir.path().join("wrong.key"));
    generate_key_file(&right)?;
    generate_key_file(&wrong)?;
    let wrong_text = std::fs::read_to_string(&wrong)?.trim().to_string();
    for loopback in [true, false] {
        let port = cosim_transport::free_port_pair("0.0.0.0").unwrap();
        let ep = if loopback { format!("tcp://127.0.0.1:{port}") } else { format!("tcp://0.0.0.0:{port}?peer=127.0.0.1") };
        let mut dev = open(&ep, Side::Device, LinkKey::File(right.clone()))?;
        assert!(dev.keyed());
        let h2d = format!("tcp://127.0.0.1:{port}");
        let ctx = zmq::Context::new();
        let _no_key = intruder(&ctx, &h2d, None, b"injected without a key")?;
        let _bad_key = intruder(&ctx, &h2d, Some(&wrong_text), b"injected with a wrong key")?;
        {
            // A cosim host with the wrong key.
            let mut host = open(&ep, Side::Host, LinkKey::File(wrong.clone()))?;
            host.send_frame(b"from a host with the wrong key")?;
            wait_until("two refusals", || dev.refused_connections() >= 2)?;
            // The device's own connection to this host was refused too: libzmq would never
            // retry it; the transport must.
            wait_until("the wrong host refusing the device", || dev.recv_frame(Duration::ZERO).is_ok_and(|f| f.is_none()) && dev.refused_by_peer() >= 1)?;
        }
        assert_eq!(dev.recv_frame(QUIET)?, None, "over {ep}: a refused peer's frame was delivered");
        // The right peer gets through in both directions.
        let mut host = open(&ep, Side::Host, LinkKey::File(right.clone()))?;
        host.send_frame(b"from the keyed host")?;
        assert_eq!(recv_some(&mut dev, "the keyed host's frame")?, b"from the keyed host", "over {ep}");
        dev.send_frame(b"from the device")?;
        assert_eq!(recv_some(&mut host, "the device's frame")?, b"from the device", "over {ep}");
        assert_eq!(host.refused_connections(), 0);
        // The intruders keep retrying; still nothing of theirs arrives.
        assert_eq!(dev.recv_frame(QUIET)?, None, "over {ep}: an intruder's frame was delivered");
        eprintln!("{ep}: refused {} connection(s)", dev.refused_connections());
    }
    Ok(())
}
