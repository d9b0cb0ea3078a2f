//! The shared-memory rings between two processes: this test binary runs itself again as the
//! device side (selected by an environment variable), so the mapping, the doorbells and the
//! wake-ups cross a real process boundary. `child_echo` is that device side: run by the other
//! tests, it returns at once when run on its own.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cosim_transport::shm::{ShmLink, DEFAULT_CAPACITY};
use cosim_transport::PrivateDir;

const CHILD_ENV: &str = "COSIM_SHM_TEST_CHILD";
const SESSION: u64 = 0x5eed;
const FRAMES: usize = 3000;

fn frame(i: usize) -> Vec<u8> {
    (0..1 + (i * 7919) % 70_000).map(|k| (k as u8) ^ (i as u8)).collect()
}

/// The device side in the child process: echoes every frame back, stops at "stop".
#[test]
fn child_echo() {
    let Ok(base) = std::env::var(CHILD_ENV) else { return };
    let mut l = ShmLink::attach(&PathBuf::from(base), SESSION).expect("child attach");
    loop {
        let f = l.recv_timeout(Duration::from_secs(10), &[]).expect("child recv").expect("parent went silent");
        if f == b"stop" {
            return;
        }
        l.send(&f, Duration::from_secs(10)).expect("child send");
    }
}

#[test]
fn frames_cross_a_process_boundary_in_order() {
    let dir = PrivateDir::new("cosim-shm-2p").unwrap();
    let base = dir.path().join("ep");
    let mut host = ShmLink::create(&base, SESSION, DEFAULT_CAPACITY).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_echo", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &base)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Frames up to 70 000 bytes (over the ring's largest DMA frame): the long ones must be refused.
    let t0 = Instant::now();
    let mut sent = std::collections::VecDeque::new();
    let mut received = 0;
    for i in 0..FRAMES {
        let f = frame(i);
        if f.len() > cosim_transport::shm::MAX_FRAME {
            assert!(host.send(&f, Duration::ZERO).is_err());
            continue;
        }
        host.send(&f, Duration::from_secs(10)).unwrap();
        sent.push_back(f);
        // Keep a few frames in flight both ways.
        while sent.len() > 4 {
            let got = host.recv_timeout(Duration::from_secs(10), &[]).unwrap().expect("child silent");
            assert_eq!(got, sent.pop_front().unwrap(), "echo {received} out of order or damaged");
            received += 1;
        }
    }
    while let Some(want) = sent.pop_front() {
        let got = host.recv_timeout(Duration::from_secs(10), &[]).unwrap().expect("child silent");
        assert_eq!(got, want);
        received += 1;
    }
    host.send(b"stop", Duration::from_secs(1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "child did not stop");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "child failed: {status}");
    assert!(received > FRAMES / 2, "{received} frames echoed");
    eprintln!("{received} frames echoed in {:?}", t0.elapsed());
}

#[test]
fn a_dead_peer_means_a_timeout_not_a_hang() {
    let dir = PrivateDir::new("cosim-shm-2p").unwrap();
    let base = dir.path().join("ep");
    let mut host = ShmLink::create(&base, SESSION, DEFAULT_CAPACITY).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_echo", "--test-threads=1"])
        .env(CHILD_ENV, &base)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    host.send(b"ping", Duration::from_secs(1)).unwrap();
    assert_eq!(host.recv_timeout(Duration::from_secs(10), &[]).unwrap().as_deref(), Some(&b"ping"[..]));
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = Instant::now();
    assert!(host.recv_timeout(Duration::from_millis(100), &[]).unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Nobody consumes: the ring fills and a send fails after its timeout instead of blocking.
    let big = vec![0u8; 65536];
    let err = (0..100).find_map(|_| host.send(&big, Duration::from_millis(50)).err()).expect("the ring never filled");
    assert!(err.to_string().contains("not receiving"), "{err}");
}
