//! The vfio-user server of one endpoint (`vfio-user:///path/to/socket`): an unpatched QEMU
//! (10.1 or later, `-device vfio-user-pci,socket=...`) drives the same `cosim_pcie_ep` shell and
//! the same simulation-thread core ([`crate::EpCore`]) as the ZeroMQ link does. Only the I/O side
//! differs: instead of the session engine and a ZeroMQ socket, two threads speak vfio-user
//! (rust-vmm's `vfio_user` crate) and turn it into the same [`ToSim`]/[`ToIo`] traffic:
//!
//! - the **server thread** runs `vfio_user::Server::run` for one client at a time. PCI config
//!   space is emulated here from the shell's parameters ([`ConfigSpace`]); BAR region reads and
//!   writes of 1 to 8 bytes become the shell's MMIO (a read waits for the RTL's completion, at
//!   most [`MMIO_READ_TIMEOUT`]); `DMA_MAP`/`DMA_UNMAP` map the client's guest memory
//!   ([`DmaMemory`]); `SET_IRQS` takes the MSI-X eventfds; `DEVICE_RESET` resets the design.
//!   When a client goes away the design sees the host lost; the next client starts a new session.
//! - the **simulation thread** carries out itself what the design sends the client ([`Direct`]):
//!   its DMA in the mapped guest memory ([`DmaMemory`], bounds-checked; a miss is an error
//!   completion to the design and a warning, never a crash; a read's data is there the next
//!   clock), MMIO read completions straight to the waiting server thread, and MSI-X straight to
//!   the client's eventfds (masked or unassigned vectors set their pending bit, which the PBA
//!   shows and an unmask or a new eventfd delivers): no other thread is woken on the way.
//! - the **device thread** only drops what has no place in this mode (NIC frames and UART bytes
//!   need the patched `accelerator-pcie` device: one warning) and, at shutdown, stops the server.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cosim_protocol::*;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion};

use crate::guest_mem::DmaMemory;
use crate::io::IoConfig;
use crate::link::{IoLink, SharedStats, ToIo, ToSim};

/// The endpoint scheme that selects this server.
pub const SCHEME: &str = "vfio-user://";

/// Longest wait for the RTL's completion of one MMIO read; below QEMU's default vfio-user reply
/// timeout (`x-msg-timeout`, 5000 ms), so QEMU gets all ones from us rather than a dead link.
pub const MMIO_READ_TIMEOUT: Duration = Duration::from_millis(4000);

/// Size of the emulated configuration space (conventional PCI, like the patched device).
const CONFIG_SIZE: usize = 256;
/// Where the MSI-X capability sits (the first capability, as QEMU's `msix_init` places it).
const MSIX_CAP: usize = 0x40;

/// The socket path of a `vfio-user://` endpoint, or None for any other endpoint.
pub fn socket_path(endpoint: &str) -> Option<&str> {
    endpoint.strip_prefix(SCHEME)
}

// ---------------------------------------------------------------------------------------------
// Configuration space

/// A type-0 configuration header with the shell's identity, BARs and MSI-X capability, and the
/// bits a client may write (everything else is read-only, as on a real function).
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    /// Builds the header from a validated configuration.
    pub fn new(d: &DeviceConfig) -> Self {
        let mut c = Self { bytes: [0; CONFIG_SIZE], writable: [0; CONFIG_SIZE] };
        c.put(0x00, &d.vendor_id.to_le_bytes());
        c.put(0x02, &d.device_id.to_le_bytes());
        c.put(0x08, &[d.revision]);
        c.put(0x09, &d.class_code.to_le_bytes()[..3]);
        c.put(0x2c, &d.subsystem_vendor_id.to_le_bytes());
        c.put(0x2e, &d.subsystem_id.to_le_bytes());
        // Command: I/O, memory, bus master, parity, SERR, INTx disable.
        c.allow(0x04, &0x0547u16.to_le_bytes());
        c.allow(0x0c, &[0xff, 0xff]); // cache line size, latency timer
        c.allow(0x3c, &[0xff]); // interrupt line (pin 0: no INTx)
        let mut i = 0;
        while i < NUM_BARS {
            let b = d.bars[i];
            if !b.present() {
                i += 1;
                continue;
            }
            let mut low = 0u32;
            if b.flags.contains(BarFlags::MEM64) {
                low |= 0x4;
            }
            if b.flags.contains(BarFlags::PREFETCH) {
                low |= 0x8;
            }
            let mask = !(b.size - 1);
            c.put(0x10 + 4 * i, &low.to_le_bytes());
            c.allow(0x10 + 4 * i, &((mask as u32) & !0xf).to_le_bytes());
            if b.flags.contains(BarFlags::MEM64) && i + 1 < NUM_BARS {
                c.allow(0x10 + 4 * (i + 1), &((mask >> 32) as u32).to_le_bytes());
                i += 1;
            }
            i += 1;
        }
        let m = d.msix;
        if m.vectors > 0 {
            c.bytes[0x06] |= 0x10; // status: capability list
            c.put(0x34, &[MSIX_CAP as u8]);
            c.put(MSIX_CAP, &[0x11, 0x00]);
            c.put(MSIX_CAP + 2, &(m.vectors - 1).to_le_bytes());
            c.allow(MSIX_CAP + 2, &0xc000u16.to_le_bytes()); // enable, function mask
            c.put(MSIX_CAP + 4, &(m.table_offset | u32::from(m.table_bar)).to_le_bytes());
            c.put(MSIX_CAP + 8, &(m.pba_offset | u32::from(m.pba_bar)).to_le_bytes());
        }
        c
    }

    fn put(&mut self, at: usize, v: &[u8]) {
        self.bytes[at..at + v.len()].copy_from_slice(v);
    }

    fn allow(&mut self, at: usize, mask: &[u8]) {
        self.writable[at..at + mask.len()].copy_from_slice(mask);
    }

    /// Reads `out.len()` bytes at `offset`; bytes past the header read as zero.
    pub fn read(&self, offset: u64, out: &mut [u8]) {
        for (k, b) in out.iter_mut().enumerate() {
            *b = usize::try_from(offset).ok().and_then(|o| self.bytes.get(o + k)).copied().unwrap_or(0);
        }
    }

    /// Writes `data` at `offset`, keeping read-only bits.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (k, v) in data.iter().enumerate() {
            let Some(o) = usize::try_from(offset).ok().map(|o| o + k).filter(|&o| o < CONFIG_SIZE) else { continue };
            let w = self.writable[o];
            self.bytes[o] = (self.bytes[o] & !w) | (v & w);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MSI-X through the client's eventfds

/// The MSI-X vectors as the server sees them: the client's eventfd per vector, the mask bits
/// (`SET_IRQS` with `ACTION_MASK`/`ACTION_UNMASK`) and the pending bits the PBA shows.
#[derive(Debug, Default)]
struct Irqs {
    fds: Vec<Option<File>>,
    masked: Vec<bool>,
    pending: Vec<bool>,
}

impl Irqs {
    fn new(vectors: usize) -> Self {
        Self { fds: (0..vectors).map(|_| None).collect(), masked: vec![false; vectors], pending: vec![false; vectors] }
    }

    /// Signals `v`, or marks it pending if it is masked or has no eventfd. False if the eventfd
    /// write failed.
    fn fire(&mut self, v: usize) -> bool {
        if v >= self.fds.len() {
            return true;
        }
        match &self.fds[v] {
            Some(f) if !self.masked[v] => {
                self.pending[v] = false;
                (&*f).write_all(&1u64.to_ne_bytes()).is_ok()
            }
            _ => {
                self.pending[v] = true;
                true
            }
        }
    }

    /// Delivers the pending vectors that can now be delivered.
    fn flush(&mut self) {
        for v in 0..self.fds.len() {
            if self.pending[v] && !self.masked[v] && self.fds[v].is_some() {
                self.fire(v);
            }
        }
    }

    /// The PBA's bytes at `offset` (a bit per vector).
    fn pba(&self, offset: u64, out: &mut [u8]) {
        for (k, b) in out.iter_mut().enumerate() {
            let byte = offset as usize + k;
            *b = (0..8)
                .filter(|bit| self.pending.get(8 * byte + bit).copied().unwrap_or(false))
                .fold(0, |a, bit| a | (1 << bit));
        }
    }

    fn reset(&mut self) {
        self.pending.iter_mut().for_each(|p| *p = false);
        self.masked.iter_mut().for_each(|m| *m = false);
    }
}

// ---------------------------------------------------------------------------------------------
// The two threads

/// An MMIO read completion for the waiting server thread: (tag, status, data).
type MmioDone = (u32, Status, u64);

/// What the server thread, the device thread and the simulation thread share.
struct Shared {
    name: String,
    link: IoLink,
    stats: Arc<SharedStats>,
    direct: Arc<Direct>,
    mmio_rx: Receiver<MmioDone>,
    closing: AtomicBool,
}

/// What the simulation thread does itself for a vfio-user endpoint, without waking another
/// thread: the design's DMA in the client's memory, MMIO read completions straight to the
/// waiting server thread, MSI-X straight to the client's eventfds. (`EpCore::send` offers every
/// message here first.)
#[derive(Debug)]
pub(crate) struct Direct {
    name: String,
    /// The client's memory (mapped by the server thread's DMA_MAP).
    pub(crate) dma: DmaMemory,
    mmio_tx: Sender<MmioDone>,
    irqs: Mutex<Irqs>,
}

impl Direct {
    pub(crate) fn new(name: &str, vectors: u16) -> (Self, Receiver<MmioDone>) {
        let (mmio_tx, mmio_rx) = crossbeam_channel::unbounded();
        let d = Self {
            name: name.to_string(),
            dma: DmaMemory::new(name),
            mmio_tx,
            irqs: Mutex::new(Irqs::new(usize::from(vectors))),
        };
        (d, mmio_rx)
    }

    fn irqs(&self) -> std::sync::MutexGuard<'_, Irqs> {
        self.irqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out `m` if it is the simulation thread's to carry out.
    pub(crate) fn take(&self, m: Message) -> Taken {
        match m {
            Message::DmaRead(r) => Taken::ReadDone(self.dma.read(&r)),
            Message::DmaWrite(w) => {
                self.dma.write(&w);
                Taken::Done
            }
            Message::MmioReadResp(r) => {
                let _ = self.mmio_tx.send((r.tag, r.status, r.data));
                Taken::Done
            }
            Message::Msix(m) => {
                if !self.irqs().fire(usize::from(m.vector)) {
                    tracing::warn!(target: "cosim::dpi", ep = %self.name, vector = m.vector,
                        "writing the client's MSI-X eventfd failed; interrupt lost");
                }
                Taken::Done
            }
            other => Taken::NotMine(other),
        }
    }
}

/// What [`Direct::take`] did with a message.
pub(crate) enum Taken {
    /// A DMA read, completed: the core takes the completion in at its next clock.
    ReadDone(DmaReadResp),
    /// Carried out.
    Done,
    /// For the I/O side.
    NotMine(Message),
}

/// Binds the socket on the caller's thread (so an error is reported at once) and starts the
/// server and device threads; the returned handle is the device thread's, which ends after
/// [`ToIo::Shutdown`] (it then removes the socket and lets the server thread go).
pub(crate) fn spawn(
    path: &str,
    cfg: IoConfig,
    link: IoLink,
    stats: Arc<SharedStats>,
    direct: Arc<Direct>,
    mmio_rx: Receiver<MmioDone>,
) -> Result<JoinHandle<()>, crate::BridgeError> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(crate::BridgeError::Param(format!(
            "vfio-user endpoint {SCHEME}{}: the socket path must be absolute",
            path.display()
        )));
    }
    let d = &cfg.device;
    if let Some(i) = d.bars.iter().position(|b| b.present() && b.flags.contains(BarFlags::IO)) {
        return Err(crate::BridgeError::Param(format!(
            "vfio-user endpoint {SCHEME}{}: BAR{i} is an I/O BAR; the vfio-user server presents memory BARs only",
            path.display()
        )));
    }
    remove_stale_socket(&path)?;
    let server = Server::new(&path, true, irq_infos(d), regions(d)).map_err(|e| {
        crate::BridgeError::Param(format!("vfio-user endpoint {SCHEME}{}: cannot listen: {e}", path.display()))
    })?;
    let shared =
        Arc::new(Shared { name: cfg.name.clone(), link, stats, direct, mmio_rx, closing: AtomicBool::new(false) });
    let mut backend =
        Backend { s: shared.clone(), config: ConfigSpace::new(d), device: d.clone(), next_tag: 1, in_session: false };
    let thread_name = |what: &str| format!("cosim-vu{what}-{}", cfg.name).chars().take(15).collect::<String>();
    std::thread::Builder::new()
        .name(thread_name("s"))
        .spawn(move || {
            // `server` lives in this thread: its Drop removes the socket file.
            while !backend.s.closing.load(Ordering::SeqCst) {
                // A malformed client can make the crate panic (e.g. a VERSION shorter than its
                // header): that ends this client, not the server.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.run(&mut backend))) {
                    Ok(r) => backend.end_session(r.err()),
                    Err(_) => {
                        tracing::error!(target: "cosim::dpi", ep = %backend.s.name,
                            "the vfio-user server panicked on a client's message; the client is dropped");
                        backend.end_session(None);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| crate::BridgeError::Thread(e.to_string()))?;
    let s2 = shared.clone();
    std::thread::Builder::new()
        .name(thread_name("d"))
        .spawn(move || device_thread(s2, path))
        .map_err(|e| crate::BridgeError::Thread(e.to_string()))
}

/// A socket file left by a simulation that ended without cleaning up is removed; a path where a
/// server answers, or that is not a socket, is an error.
fn remove_stale_socket(path: &Path) -> Result<(), crate::BridgeError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    let err = |why: String| crate::BridgeError::Param(format!("vfio-user endpoint {SCHEME}{}: {why}", path.display()));
    if !meta.file_type().is_socket() {
        return Err(err("the path exists and is not a socket".into()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(err("another server already listens on this socket".into()));
    }
    tracing::info!(target: "cosim::dpi", path = %path.display(), "removing a stale vfio-user socket (nothing listens on it)");
    std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))
}

/// INTx, MSI and MSI-X (the first three VFIO PCI indexes; only MSI-X has vectors). The error and
/// request indexes are left out: QEMU then treats the function as having no error reporting,
/// as it does for conventional PCI, instead of warning that it could not enable it.
fn irq_infos(d: &DeviceConfig) -> Vec<IrqInfo> {
    (0..=VFIO_PCI_MSIX_IRQ_INDEX)
        .map(|index| {
            if index == VFIO_PCI_MSIX_IRQ_INDEX && d.msix.vectors > 0 {
                IrqInfo {
                    index,
                    count: u32::from(d.msix.vectors),
                    flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_NORESIZE,
                }
            } else {
                IrqInfo { index, count: 0, flags: VFIO_IRQ_INFO_EVENTFD }
            }
        })
        .collect()
}

fn regions(d: &DeviceConfig) -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let size = match index as usize {
                i if i < NUM_BARS => d.bars[i].size,
                _ if index == VFIO_PCI_CONFIG_REGION_INDEX => CONFIG_SIZE as u64,
                _ => 0,
            };
            let flags = if size > 0 { VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE } else { 0 };
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas: Vec::new(),
                mmap_fd: None,
            }
        })
        .collect()
}

/// The device thread: what the design sends, until the simulation shuts the endpoint down.
fn device_thread(s: Arc<Shared>, path: PathBuf) {
    let mut warned_streams = false;
    loop {
        let msg = match s.link.rx.recv_timeout(Duration::from_secs(1)) {
            Ok(ToIo::Send(m)) => m,
            Ok(ToIo::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => continue,
        };
        match msg {
            Message::NicFrame(_) | Message::Serial(_) => {
                if !warned_streams {
                    tracing::warn!(target: "cosim::dpi", ep = %s.name,
                        "the design sent a NIC frame or UART bytes: in vfio-user mode these channels are not \
                         connected (they need QEMU with cosim's accelerator-pcie device); dropped from now on");
                    warned_streams = true;
                }
            }
            other => {
                tracing::debug!(target: "cosim::dpi", ep = %s.name, opcode = ?other.opcode(), "not used in vfio-user mode; dropped");
            }
        }
    }
    // Stop the server thread: no more sessions; a connect wakes its accept() if it waits there
    // (a connected client keeps it until the client leaves; every request then fails).
    s.closing.store(true, Ordering::SeqCst);
    let _ = UnixStream::connect(&path);
    let _ = std::fs::remove_file(&path);
    let faults = s.direct.dma.faults();
    if faults > 0 {
        tracing::warn!(target: "cosim::dpi", ep = %s.name, faults, "DMA accesses outside the client's memory during this run");
    }
}

/// The server thread's side: everything `vfio_user::Server::run` asks of the device.
struct Backend {
    s: Arc<Shared>,
    config: ConfigSpace,
    device: DeviceConfig,
    next_tag: u32,
    in_session: bool,
}

fn io_err(kind: std::io::ErrorKind, msg: String) -> std::io::Error {
    std::io::Error::new(kind, msg)
}

impl Backend {
    /// The first request of a client starts a session for the design.
    fn touch(&mut self) -> std::io::Result<()> {
        if self.s.closing.load(Ordering::SeqCst) {
            return Err(io_err(std::io::ErrorKind::NotConnected, "the simulation is shutting down".into()));
        }
        if !self.in_session {
            self.in_session = true;
            SharedStats::add(&self.s.stats.sessions, 1);
            tracing::info!(target: "cosim::dpi", ep = %self.s.name, "vfio-user client connected");
            self.s.link.to_sim(ToSim::NewSession);
        }
        Ok(())
    }

    /// The client left (or the stream broke): outstanding reads fail, its memory and eventfds go.
    fn end_session(&mut self, err: Option<vfio_user::Error>) {
        if self.s.closing.load(Ordering::SeqCst) {
            return;
        }
        match &err {
            Some(e) => tracing::warn!(target: "cosim::dpi", ep = %self.s.name, error = %e,
                "vfio-user connection failed; waiting for the next client"),
            None if self.in_session => tracing::info!(target: "cosim::dpi", ep = %self.s.name,
                "vfio-user client disconnected; waiting for the next client"),
            None => {}
        }
        if self.in_session {
            self.in_session = false;
            self.s.link.to_sim(ToSim::HostLost);
            // The departed client's job must not go on into the next client's memory: reset
            // the design now rather than wait for the next client's reset.
            self.s.link.to_sim(ToSim::Msg(Message::Reset));
        }
        self.s.direct.dma.mem.clear();
        let mut irqs = self.s.direct.irqs();
        *irqs = Irqs::new(usize::from(self.device.msix.vectors));
        drop(irqs);
        self.config = ConfigSpace::new(&self.device);
        if err.is_some() {
            // A failing accept or stream should not spin.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Splits `offset..offset + len` into naturally aligned accesses of 1 to 8 bytes.
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, AccessSize)> {
        let mut at = offset;
        let end = offset.saturating_add(len as u64);
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let size = [AccessSize::B8, AccessSize::B4, AccessSize::B2, AccessSize::B1]
                .into_iter()
                .find(|s| at.is_multiple_of(s.bytes() as u64) && at.saturating_add(s.bytes() as u64) <= end)
                .unwrap_or(AccessSize::B1);
            let p = (at, size);
            at += size.bytes() as u64;
            Some(p)
        })
    }

    fn bar(&self, region: u32) -> std::io::Result<BarIndex> {
        BarIndex::new(region as u8)
            .filter(|b| region < NUM_BARS as u32 && self.device.bars[b.get() as usize].present())
            .ok_or_else(|| {
                io_err(std::io::ErrorKind::InvalidInput, format!("region {region} is not a BAR of this device"))
            })
    }

    fn in_pba(&self, bar: BarIndex, offset: u64, len: usize) -> bool {
        let m = self.device.msix;
        let pba_len = u64::from(m.vectors).div_ceil(64) * 8;
        m.vectors > 0
            && bar.get() == m.pba_bar
            && offset >= u64::from(m.pba_offset)
            && offset.saturating_add(len as u64) <= u64::from(m.pba_offset) + pba_len
    }

    /// One MMIO read through the design; all ones on an error completion or timeout (as a PCIe
    /// read that fails), with a warning.
    fn mmio_read(&mut self, bar: BarIndex, offset: u64, size: AccessSize, deadline: Instant) -> u64 {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        self.s.link.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag, bar, size, offset })));
        loop {
            match self.s.mmio_rx.recv_deadline(deadline) {
                Ok((t, status, data)) if t == tag => {
                    if status == Status::Ok {
                        return data & size.mask();
                    }
                    tracing::warn!(target: "cosim::dpi", ep = %self.s.name, bar = bar.get(), offset = format_args!("{offset:#x}"),
                        ?status, "MMIO read completed with an error; the client reads all ones");
                    return size.mask();
                }
                Ok(_) => continue, // the completion of a read that timed out earlier
                Err(_) => {
                    SharedStats::add(&self.s.stats.mmio_errors, 1);
                    tracing::warn!(target: "cosim::dpi", ep = %self.s.name, bar = bar.get(), offset = format_args!("{offset:#x}"),
                        timeout_ms = MMIO_READ_TIMEOUT.as_millis() as u64,
                        "no MMIO read completion from the design in time; the client reads all ones");
                    return size.mask();
                }
            }
        }
    }
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), std::io::Error> {
        self.touch()?;
        if region == VFIO_PCI_CONFIG_REGION_INDEX {
            self.config.read(offset, data);
            return Ok(());
        }
        let bar = self.bar(region)?;
        if self.in_pba(bar, offset, data.len()) {
            let m = self.device.msix;
            self.s.direct.irqs().pba(offset - u64::from(m.pba_offset), data);
            return Ok(());
        }
        let pieces: Vec<_> = Self::pieces(offset, data.len()).collect();
        // One deadline for the whole access: the reply must reach the client before its own
        // timeout, or its message stream breaks.
        let deadline = Instant::now() + MMIO_READ_TIMEOUT;
        for (at, size) in pieces {
            let v = self.mmio_read(bar, at, size, deadline);
            let k = (at - offset) as usize;
            data[k..k + size.bytes()].copy_from_slice(&v.to_le_bytes()[..size.bytes()]);
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.touch()?;
        if region == VFIO_PCI_CONFIG_REGION_INDEX {
            self.config.write(offset, data);
            return Ok(());
        }
        let bar = self.bar(region)?;
        if self.in_pba(bar, offset, data.len()) {
            return Ok(()); // the PBA is read-only
        }
        for (at, size) in Self::pieces(offset, data.len()) {
            let k = (at - offset) as usize;
            let mut v = [0u8; 8];
            v[..size.bytes()].copy_from_slice(&data[k..k + size.bytes()]);
            let w = MmioWrite { bar, size, offset: at, data: u64::from_le_bytes(v) };
            self.s.link.to_sim(ToSim::Msg(Message::MmioWrite(w)));
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> Result<(), std::io::Error> {
        self.touch()?;
        let writable = flags.contains(DmaMapFlags::WRITE);
        if fd.is_none() {
            // Firmware ROMs come without one even when the RAM is shared; a DMA into such a range
            // fails with a warning that says how to share the RAM.
            tracing::debug!(target: "cosim::dpi", ep = %self.s.name, address = format_args!("{address:#x}"), size,
                "DMA_MAP without a file descriptor: DMA to this range will fail");
        }
        self.s.direct.dma.mem.map(address, size, fd.as_ref(), offset, writable).map_err(|e| {
            tracing::warn!(target: "cosim::dpi", ep = %self.s.name, error = %e, "DMA_MAP refused");
            io_err(std::io::ErrorKind::InvalidInput, e.to_string())
        })?;
        tracing::debug!(target: "cosim::dpi", ep = %self.s.name, address = format_args!("{address:#x}"), size, "DMA_MAP");
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> Result<(), std::io::Error> {
        self.touch()?;
        let n = if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            let n = self.s.direct.dma.mem.counts().0;
            self.s.direct.dma.mem.clear();
            n
        } else {
            self.s.direct.dma.mem.unmap(address, size).map_err(|e| {
                tracing::warn!(target: "cosim::dpi", ep = %self.s.name, error = %e, "DMA_UNMAP refused");
                io_err(std::io::ErrorKind::InvalidInput, e.to_string())
            })?
        };
        tracing::debug!(target: "cosim::dpi", ep = %self.s.name, address = format_args!("{address:#x}"), size, removed = n, "DMA_UNMAP");
        Ok(())
    }

    fn reset(&mut self) -> Result<(), std::io::Error> {
        self.touch()?;
        self.config = ConfigSpace::new(&self.device);
        self.s.direct.irqs().reset();
        self.s.link.to_sim(ToSim::Msg(Message::Reset));
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), std::io::Error> {
        self.touch()?;
        let vectors = u32::from(self.device.msix.vectors);
        let bad = |why: String| Err(io_err(std::io::ErrorKind::InvalidInput, why));
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            // Only MSI-X exists; disabling another index (count 0) is harmless.
            return if count == 0 {
                Ok(())
            } else {
                bad(format!("IRQ index {index} has no interrupts on this device"))
            };
        }
        let range = start as usize..(start as usize + count as usize);
        if start.checked_add(count).is_none_or(|end| end > vectors) {
            return bad(format!("MSI-X vectors {start}..{} outside 0..{vectors}", start.saturating_add(count)));
        }
        let mut irqs = self.s.direct.irqs();
        let action = flags & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER);
        let data = flags & !action;
        match (action, data) {
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD) => {
                if fds.is_empty() {
                    range.for_each(|v| irqs.fds[v] = None);
                } else if fds.len() == count as usize {
                    for (v, f) in range.zip(fds) {
                        crate::guest_mem::set_nonblocking(&f)?;
                        irqs.fds[v] = Some(f);
                    }
                } else {
                    return bad(format!("SET_IRQS for {count} vectors carried {} eventfds", fds.len()));
                }
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE) if count == 0 => {
                // All eventfds go. Pending bits stay: QEMU disables and re-enables every vector
                // when the guest starts using one more (NORESIZE), and an interrupt raised while
                // that vector had no eventfd must come once it has one.
                irqs.fds.iter_mut().for_each(|f| *f = None);
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE) => range.for_each(|v| {
                irqs.fire(v);
            }),
            (VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_DATA_NONE) => range.for_each(|v| irqs.masked[v] = true),
            (VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_NONE) => range.for_each(|v| irqs.masked[v] = false),
            _ => {
                return bad(format!("SET_IRQS flags {flags:#x} not supported (eventfd triggers, mask and unmask are)"))
            }
        }
        irqs.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceConfig {
        let mut d = DeviceConfig {
            vendor_id: 0x1234,
            device_id: 0xabcd,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            class_code: 0x120000,
            revision: 3,
            ..DeviceConfig::default()
        };
        d.bars[0] = BarDesc::mem32(0x1000);
        d.bars[2] = BarDesc::mem64(0x10_0000, true);
        d.msix = MsixConfig { vectors: 4, table_bar: 0, table_offset: 0x800, pba_bar: 0, pba_offset: 0xc00 };
        d
    }

    fn rd(c: &ConfigSpace, at: u64, n: usize) -> u64 {
        let mut b = [0u8; 8];
        c.read(at, &mut b[..n]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn config_space_carries_the_identity_bars_and_msix_capability() {
        let c = ConfigSpace::new(&device());
        assert_eq!(rd(&c, 0, 4), 0xabcd_1234);
        assert_eq!(rd(&c, 8, 4), 0x1200_0003, "class code and revision");
        assert_eq!(rd(&c, 0x2c, 4), 0x1100_1af4);
        assert_eq!(rd(&c, 0x06, 2) & 0x10, 0x10, "capability list");
        assert_eq!(rd(&c, 0x34, 1), 0x40);
        assert_eq!(rd(&c, 0x40, 2), 0x0011, "MSI-X id, last capability");
        assert_eq!(rd(&c, 0x42, 2), 3, "table size N-1");
        assert_eq!(rd(&c, 0x44, 4), 0x800);
        assert_eq!(rd(&c, 0x48, 4), 0xc00);
        assert_eq!(rd(&c, 0x10, 4), 0, "BAR0: 32-bit memory");
        assert_eq!(rd(&c, 0x18, 4), 0xc, "BAR2: 64-bit prefetchable");
        assert_eq!(rd(&c, 0x3d, 1), 0, "no INTx pin");
    }

    #[test]
    fn config_writes_keep_read_only_bits_and_size_bars() {
        let mut c = ConfigSpace::new(&device());
        c.write(0, &[0xff; 4]);
        assert_eq!(rd(&c, 0, 4), 0xabcd_1234, "identity is read-only");
        c.write(0x04, &0xffffu16.to_le_bytes());
        assert_eq!(rd(&c, 0x04, 2), 0x0547);
        c.write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(rd(&c, 0x10, 4), 0xffff_f000, "BAR0 sizing: 4 KiB");
        c.write(0x18, &u32::MAX.to_le_bytes());
        c.write(0x1c, &u32::MAX.to_le_bytes());
        assert_eq!(rd(&c, 0x18, 4), 0xfff0_000c, "BAR2 sizing: 1 MiB, type bits kept");
        assert_eq!(rd(&c, 0x1c, 4), 0xffff_ffff);
        c.write(0x14, &u32::MAX.to_le_bytes());
        assert_eq!(rd(&c, 0x14, 4), 0, "an absent BAR stays 0");
        c.write(0x42, &0xffffu16.to_le_bytes());
        assert_eq!(rd(&c, 0x42, 2), 0xc003, "MSI-X enable and mask are writable, the size is not");
        c.write(0x1000, &[1]); // past the header: ignored, no panic
        assert_eq!(rd(&c, 0xfc, 8), 0);
    }

    #[test]
    fn irqs_honour_masks_and_keep_pending_bits_for_the_pba() {
        let mut irqs = Irqs::new(4);
        assert!(irqs.fire(1), "no eventfd yet: pending");
        let mut pba = [0u8; 8];
        irqs.pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        r.set_nonblocking(true).unwrap();
        irqs.fds[1] = Some(File::from(std::os::fd::OwnedFd::from(w)));
        irqs.masked[1] = true;
        irqs.flush();
        assert!(std::io::Read::read(&mut &r, &mut [0u8; 8]).is_err(), "masked: nothing delivered");
        irqs.masked[1] = false;
        irqs.flush();
        let mut buf = [0u8; 8];
        assert_eq!(std::io::Read::read(&mut &r, &mut buf).unwrap(), 8, "unmask delivers the pending vector");
        irqs.pba(0, &mut pba);
        assert_eq!(pba[0], 0, "and clears its pending bit");
    }

    #[test]
    fn accesses_split_into_aligned_pieces() {
        let p: Vec<_> = Backend::pieces(0x6, 12).collect();
        assert_eq!(p, vec![(0x6, AccessSize::B2), (0x8, AccessSize::B8), (0x10, AccessSize::B2)]);
        let p: Vec<_> = Backend::pieces(0x10, 4).collect();
        assert_eq!(p, vec![(0x10, AccessSize::B4)]);
    }

    #[test]
    fn endpoint_scheme() {
        assert_eq!(socket_path("vfio-user:///tmp/x.sock"), Some("/tmp/x.sock"));
        assert_eq!(socket_path("ipc:///tmp/x"), None);
    }
}
