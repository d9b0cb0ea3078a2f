//! The simulation's vfio-user server (`--endpoint vfio-user://PATH`) driven by rust-vmm's
//! vfio-user client, as QEMU's `vfio-user-pci` drives it: config space from the shell's
//! parameters, BAR accesses as the shell's MMIO, DMA straight into the client's shared memory
//! (a memfd), MSI-X through eventfds with masking, device reset, a DMA outside the client's
//! memory, and clients that go away (also in the middle of a job) while the simulation serves on.
//!
//! Needs `make sim-test`; run by `make test-hdl` (and `make test`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use cosim_host_model::{sim_binary, SimOptions, SimProcess};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::Client;

const T: Duration = Duration::from_secs(20);
mod test_dev;
use test_dev::*;
/// The PBA: BAR2 at 0x2000 (cosim_test_top's MSI-X parameters).
const PBA: u64 = 0x2000;
/// Guest RAM the client shares: 1 MiB at this bus address.
const RAM_AT: u64 = 0x10_0000;
const RAM_SIZE: u64 = 0x10_0000;

struct Rig {
    sim: SimProcess,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> Result<Rig> {
    start_with(&[])
}

fn start_with(args: &[&str]) -> Result<Rig> {
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let dir = tempfile::Builder::new().prefix("cosim-vfio-user").tempdir()?;
    let sock = dir.path().join("dev.sock");
    let ep = format!("vfio-user://{}", sock.display());
    let opts = SimOptions {
        log: Some(dir.path().join("sim.log")),
        ready_timeout: T,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..SimOptions::default()
    };
    let sim = SimProcess::spawn_with(&bin, &ep, opts)?;
    ensure!(sim.endpoint() == ep, "ready line names {} (expected {ep})", sim.endpoint());
    Ok(Rig { sim, sock, _dir: dir })
}

/// The client's guest RAM: a memfd mapped at [`RAM_AT`].
struct Ram(File);

impl Ram {
    fn new(c: &mut Client) -> Result<Self> {
        // An unlinked file stands in for QEMU's memfd: both are shared, mappable descriptors.
        let f = tempfile::tempfile()?;
        f.set_len(RAM_SIZE)?;
        c.dma_map(0, RAM_AT, RAM_SIZE, f.as_raw_fd()).map_err(|e| anyhow::anyhow!("dma_map: {e:?}"))?;
        Ok(Self(f))
    }
    fn put(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        self.0.seek(SeekFrom::Start(addr - RAM_AT))?;
        Ok(self.0.write_all(data)?)
    }
    fn get(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.0.seek(SeekFrom::Start(addr - RAM_AT))?;
        self.0.read_exact(&mut v)?;
        Ok(v)
    }
}

fn rd(c: &mut Client, region: u32, off: u64, n: usize) -> Result<u64> {
    let mut b = [0u8; 8];
    c.region_read(region, off, &mut b[..n]).map_err(|e| anyhow::anyhow!("region_read {region}@{off:#x}: {e:?}"))?;
    Ok(u64::from_le_bytes(b))
}

fn wr(c: &mut Client, region: u32, off: u64, n: usize, v: u64) -> Result<()> {
    c.region_write(region, off, &v.to_le_bytes()[..n])
        .map_err(|e| anyhow::anyhow!("region_write {region}@{off:#x}: {e:?}"))
}

/// One interrupt descriptor per vector: the server writes 8 bytes per interrupt, as to QEMU's
/// eventfds; a socket pair lets the test read them without unsafe code. Returns (what the
/// server gets, what the test reads).
fn eventfds(n: usize) -> Result<(Vec<File>, Vec<File>)> {
    let mut give = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..n {
        let (a, b) = UnixStream::pair()?;
        b.set_nonblocking(true)?;
        give.push(File::from(OwnedFd::from(a)));
        keep.push(File::from(OwnedFd::from(b)));
    }
    Ok((give, keep))
}

/// Waits until interrupt descriptor `f` is signalled (true) or `within` passes (false).
fn fired(f: &File, within: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        let mut b = [0u8; 8];
        if (&*f).read(&mut b).is_ok() {
            return true;
        }
        if t0.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn enable_msix(c: &mut Client, fds: &[File]) -> Result<()> {
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    c.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
        0,
        raw.len() as u32,
        &raw,
    )
    .map_err(|e| anyhow::anyhow!("set_irqs: {e:?}"))
}

fn start_copy(c: &mut Client, src: u64, dst: u64, len: u64, vector: u64) -> Result<()> {
    wr(c, 0, DMA_SRC, 8, src)?;
    wr(c, 0, DMA_DST, 8, dst)?;
    wr(c, 0, DMA_LEN, 8, len)?;
    wr(c, 0, DMA_CTRL, 4, 0b11 | (vector << 16))
}

fn connect(r: &Rig) -> Result<Client> {
    Client::new(&r.sock)
        .map_err(|e| anyhow::anyhow!("connect to {}: {e:?}; sim log:\n{}", r.sock.display(), r.sim.log()))
}

#[test]
#[ignore = "needs `make sim-test`: run by `make test-hdl` (or `make test`)"]
fn config_mmio_dma_msix_and_reset_through_a_vfio_user_client() -> Result<()> {
    let r = start()?;
    let mut c = connect(&r)?;
    // Config space from the shell's parameters.
    ensure!(rd(&mut c, VFIO_PCI_CONFIG_REGION_INDEX, 0, 4)? == 0x7e57_1ded, "vendor/device");
    ensure!(rd(&mut c, VFIO_PCI_CONFIG_REGION_INDEX, 0x34, 1)? == 0x40, "capability pointer");
    ensure!(rd(&mut c, VFIO_PCI_CONFIG_REGION_INDEX, 0x40, 4)? & 0x07ff_00ff == 0x0007_0011, "MSI-X with 8 vectors");
    ensure!(rd(&mut c, VFIO_PCI_CONFIG_REGION_INDEX, 0x18, 4)? & 0x6 == 0x4, "BAR2 is 64-bit");
    ensure!(c.region(0).map(|g| g.size) == Some(4096), "BAR0 region size");
    // MMIO of every width reaches the design.
    let id = rd(&mut c, 0, ID, 8)?;
    ensure!(id != 0 && id != u64::MAX, "ID register {id:#x}");
    wr(&mut c, 0, SCRATCH0, 8, 0x1122_3344_5566_7788)?;
    ensure!(rd(&mut c, 0, SCRATCH0, 8)? == 0x1122_3344_5566_7788);
    ensure!(rd(&mut c, 0, SCRATCH0 + 2, 2)? == 0x5566, "2-byte read");
    ensure!(rd(&mut c, 0, SCRATCH0 + 7, 1)? == 0x11, "1-byte read");
    // DMA through the shared memory, completion by MSI-X.
    let mut ram = Ram::new(&mut c)?;
    let (give, fds) = eventfds(8)?;
    enable_msix(&mut c, &give)?;
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    ram.put(RAM_AT + 0x1003, &data)?;
    start_copy(&mut c, RAM_AT + 0x1003, RAM_AT + 0x8001, data.len() as u64, 3)?;
    ensure!(fired(&fds[3], T), "no MSI-X on vector 3 after the copy; sim log:\n{}", r.sim.log());
    ensure!(rd(&mut c, 0, DMA_STATUS, 8)? & 0b111 == 0b010, "status after copy");
    ensure!(ram.get(RAM_AT + 0x8001, data.len())? == data, "copied bytes in the client's memory");
    ensure!(ram.get(RAM_AT + 0x8001 + data.len() as u64, 1)? == [0], "nothing written past the end");
    // Masking: a masked vector's interrupt waits in the PBA and comes on unmask.
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 5, 1, &[])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wr(&mut c, 0, IRQ_TRIGGER, 4, 5)?;
    ensure!(!fired(&fds[5], Duration::from_millis(300)), "a masked vector fired");
    ensure!(rd(&mut c, 2, PBA, 8)? == 1 << 5, "PBA shows vector 5 pending");
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE, 5, 1, &[])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ensure!(fired(&fds[5], T), "unmask did not deliver the pending vector");
    ensure!(rd(&mut c, 2, PBA, 8)? == 0, "PBA clear after delivery");
    // A DMA outside the client's memory: an error to the design, a warning, no crash.
    start_copy(&mut c, 0x7000_0000, RAM_AT, 64, 2)?;
    ensure!(fired(&fds[2], T), "no completion interrupt after the failed copy");
    let st = rd(&mut c, 0, DMA_STATUS, 8)?;
    ensure!(st & 0b110 == 0b110, "status {st:#x}: ERROR expected after a DMA read outside guest memory");
    r.sim.wait_log("outside every range the client mapped", T)?;
    // Device reset.
    c.reset().map_err(|e| anyhow::anyhow!("reset: {e:?}"))?;
    ensure!(rd(&mut c, 0, SCRATCH0, 8)? == 0, "SCRATCH0 survived a device reset");
    ensure!(rd(&mut c, 0, ID, 8)? == id, "the design answers after reset");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-test`: run by `make test-hdl` (or `make test`)"]
fn a_client_that_goes_away_mid_job_leaves_the_simulation_serving_the_next() -> Result<()> {
    // DMA reads complete at once from the client's memory; a modelled read latency of 20,000
    // clocks makes a copy take long enough to be cut off.
    let mut r = start_with(&["+cosim_dma_latency=20000"])?;
    {
        let mut c = connect(&r)?;
        let _ram = Ram::new(&mut c)?;
        wr(&mut c, 0, SCRATCH0, 8, 42)?;
        // A slow copy (4 KiB in single-beat bursts: 512 DMA reads, 4 at a time, each 20,000
        // clocks: 2.5 M clocks) still running when the client vanishes.
        start_copy(&mut c, RAM_AT, RAM_AT + 0x8_0000, 4096 | (1 << 32), 1)?;
        ensure!(rd(&mut c, 0, DMA_STATUS, 8)? & 1 == 1, "the copy is running when the client goes");
    }
    r.sim.wait_log("vfio-user client disconnected", T)?;
    // The departed client's job is stopped: the design is reset at once, not by the next client.
    let log = r.sim.wait_log("device reset from the host", T)?;
    ensure!(log.matches("device reset from the host").count() == 1, "one reset so far:\n{log}");
    let mut c = connect(&r)?;
    let mut ram = Ram::new(&mut c)?;
    let (give, fds) = eventfds(8)?;
    enable_msix(&mut c, &give)?;
    c.reset().map_err(|e| anyhow::anyhow!("reset: {e:?}"))?;
    // Whatever the old job does after its client left, the new client's job is whole.
    let t0 = Instant::now();
    while rd(&mut c, 0, DMA_STATUS, 8)? & 1 != 0 {
        if t0.elapsed() > T {
            bail!("the DMA engine stays busy after a reset");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let data = vec![0x5a; 4096];
    ram.put(RAM_AT + 0x2000, &data)?;
    start_copy(&mut c, RAM_AT + 0x2000, RAM_AT + 0x4000, 4096, 4)?;
    ensure!(fired(&fds[4], T), "no interrupt for the second client's copy; sim log:\n{}", r.sim.log());
    ensure!(ram.get(RAM_AT + 0x4000, 4096)? == data);
    drop(c);
    ensure!(r.sim.wait_exit(Duration::from_millis(200)).is_err(), "the simulation ended with its client");
    let log = r.sim.log();
    ensure!(log.contains("vfio-user client connected"), "{log}");
    ensure!(r.sim.terminate(T)?.success(), "the simulation ends cleanly on SIGTERM; log:\n{}", r.sim.log());
    ensure!(!r.sock.exists(), "the socket is removed when the simulation ends");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-test`: run by `make test-hdl` (or `make test`)"]
fn a_busy_socket_path_is_refused_and_a_stale_one_is_replaced() -> Result<()> {
    let r = start()?;
    // A second simulation on the same path: refused with a message, the first keeps serving.
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let ep = format!("vfio-user://{}", r.sock.display());
    let opts = SimOptions { ready_timeout: Duration::from_secs(5), ..SimOptions::default() };
    match SimProcess::spawn_with(&bin, &ep, opts) {
        Ok(_) => bail!("a second server on a busy socket started"),
        Err(e) => ensure!(format!("{e}").contains("already listens"), "unexpected error: {e}"),
    }
    let mut c = connect(&r)?;
    wr(&mut c, 0, SCRATCH0, 8, 7)?;
    ensure!(rd(&mut c, 0, SCRATCH0, 8)? == 7);
    // A socket file nobody listens on (a simulation that was killed) is replaced.
    let stale = r._dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    ensure!(stale.exists(), "the stale socket file stays after its listener closed");
    let ep = format!("vfio-user://{}", stale.display());
    let opts = SimOptions { ready_timeout: T, ..SimOptions::default() };
    let mut second = SimProcess::spawn_with(&bin, &ep, opts)?;
    second.wait_log("removing a stale vfio-user socket", T)?;
    let mut c2 = Client::new(&stale).map_err(|e| anyhow::anyhow!("connect to the replaced socket: {e:?}"))?;
    ensure!(rd(&mut c2, 0, ID, 8)? == rd(&mut c, 0, ID, 8)?, "both simulations answer");
    drop(c2);
    second.terminate(T)?;
    // A relative path is refused.
    let opts = SimOptions { ready_timeout: Duration::from_secs(5), ..SimOptions::default() };
    match SimProcess::spawn_with(&bin, "vfio-user://rel.sock", opts) {
        Ok(_) => bail!("a relative socket path was accepted"),
        Err(e) => ensure!(format!("{e}").contains("must be absolute"), "unexpected error: {e}"),
    }
    Ok(())
}

#[test]
#[ignore = "needs `make sim-test`: run by `make test-hdl` (or `make test`)"]
fn an_interrupt_descriptor_the_client_closed_costs_a_warning_not_the_simulation() -> Result<()> {
    let r = start()?;
    let mut c = connect(&r)?;
    let (give, mut fds) = eventfds(8)?;
    enable_msix(&mut c, &give)?;
    // The client closes its end of vector 4's descriptor (a socket here, as a non-QEMU client
    // might hand over): the server's next interrupt there writes to a socket nobody reads, which
    // without SIGPIPE ignored would end the simulation.
    drop(std::mem::replace(&mut fds[4], File::open("/dev/null")?));
    wr(&mut c, 0, IRQ_TRIGGER, 4, 4)?;
    r.sim.wait_log("writing the client's MSI-X eventfd failed", T)?;
    // Still serving: MMIO answers and another vector is delivered.
    ensure!(rd(&mut c, 0, SCRATCH0, 8).is_ok(), "MMIO after the failed interrupt; sim log:\n{}", r.sim.log());
    wr(&mut c, 0, IRQ_TRIGGER, 4, 3)?;
    ensure!(fired(&fds[3], T), "vector 3 after vector 4's descriptor was closed; sim log:\n{}", r.sim.log());
    Ok(())
}
