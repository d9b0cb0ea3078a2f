//! Access control on the link (docs/protocol.md, "Access control") where it needs a second
//! process: a key taken from `COSIM_KEY_FILE` by `cosim-zmq-peer`. The other access-control tests
//! (private ipc directories, loopback-only tcp, keyed tcp) need no peer process and live in
//! transport/tests/access_control.rs. Every wait is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cosim_transport::{
    generate_key_file, Endpoint, LinkKey, PrivateDir, Side, Transport, ZmqOptions, ZmqTransport, KEY_FILE_ENV,
};

const STEP: Duration = Duration::from_secs(10);

fn open(ep: &str, side: Side, key: LinkKey) -> Result<ZmqTransport> {
    let opts = ZmqOptions { key, send_timeout: Duration::from_millis(500), ..ZmqOptions::default() };
    Ok(ZmqTransport::open(&Endpoint::parse(ep)?, side, &opts)?)
}


/// `COSIM_KEY_FILE` configures a process that does not set a key itself (here the scripted
/// device peer, echoing raw frames); without it the same process refuses to leave loopback.
#[test]
fn key_file_from_the_environment() -> Result<()> {
    let dir = PrivateDir::new("acl-env")?;
    let key = dir.path().join("link.key");
    generate_key_file(&key)?;
    let port = cosim_transport::free_port_pair("0.0.0.0").unwrap();
    let ep = format!("tcp://0.0.0.0:{port}?peer=127.0.0.1");
    let peer = |env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cosim-zmq-peer"));
        c.args(["--endpoint", &ep, "--raw-echo"]).stderr(Stdio::piped()).env_remove(KEY_FILE_ENV);
        if let Some(k) = env {
            c.env(KEY_FILE_ENV, k);
        }
        c
    };
    let out = peer(None).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains(KEY_FILE_ENV), "peer without a key: {:?} {err}", out.status);

    let mut child = peer(Some(&key)).spawn()?;
    let mut host = open(&ep, Side::Host, LinkKey::File(key.clone()))?;
    host.send_frame(b"echo me")?;
    let echoed = host.recv_frame(STEP)?;
    let _ = host.send_frame(&[0]); // ends the echo
    let deadline = Instant::now() + STEP;
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    ensure!(echoed.as_deref() == Some(&b"echo me"[..]), "no echo over the keyed link within {STEP:?}: {echoed:?}");
    Ok(())
}
