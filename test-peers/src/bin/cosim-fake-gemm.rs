//! `cosim-fake-gemm`: a software model of the GEMM accelerator (docs/register-map.md) on the
//! device side of the cosim protocol. A test double for the Verilator simulation with the same
//! command line and ready line (`cosim-sim: ready endpoint=E`), so `cosim-launch --sim` can use it
//! to exercise QEMU, the guest driver and the tool without the RTL. Not cycle-accurate: CYCLES
//! reports the ideal `ceil(M*N*K / 16)`, DMA_WAIT 0.
//!
//! The session rules of docs/protocol.md (discard until INIT, answer INIT with CONFIG, versions,
//! heartbeats, liveness, GOODBYE) are `DeviceSession`'s, driven by `cosim_transport::DeviceLoop`;
//! this file is only the register model. A new session resets it. A job runs inside the START
//! write: DMA reads of A and B (other host messages are answered meanwhile), compute, DMA write
//! of C, then MSI-X if IRQ_EN; it stops waiting for DMA when its session ends or its host is lost. `--delay-ms N` holds every job for N ms before it ends
//! (STATUS reads BUSY meanwhile), to test timeouts and a simulation killed mid-job. No `unsafe`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cosim_gemm_abi::{array, ctrl, defaults, field_put, pci, regs, status, ErrorCode, UART_BANNER};
use cosim_protocol::session::{DeviceEvent, DeviceState};
use cosim_protocol::*;
use cosim_transport::{DeviceLoop, Endpoint, Side, TransportError, ZmqOptions, ZmqTransport};

const HELP: &str = "\
cosim-fake-gemm: software model of the GEMM accelerator (test double for the Verilator simulation)

usage: cosim-fake-gemm --endpoint <ipc:///dir/name | tcp://host:port> [--delay-ms N]
                       [--max-cycles N] [--waves F] [--stats]   (accepted and ignored)

Prints `cosim-sim: ready endpoint=E` on stderr once bound. Runs until killed.";

// The register map, PCI identity and default sizes are gemm-abi's (docs/register-map.md).
const MAX_DIM: u32 = defaults::MAX_DIM;
const ROWS: u32 = defaults::ROWS;
const COLS: u32 = defaults::COLS;

fn config() -> DeviceConfig {
    let mut d = DeviceConfig {
        vendor_id: pci::VENDOR_ID,
        device_id: pci::DEVICE_ID,
        subsystem_vendor_id: pci::SUBSYSTEM_VENDOR_ID,
        subsystem_id: pci::SUBSYSTEM_ID,
        class_code: pci::CLASS_CODE,
        revision: pci::REVISION,
        ..Default::default()
    };
    let bar = |size, is64| {
        if is64 {
            BarDesc::mem64(size, false)
        } else {
            BarDesc::mem32(size)
        }
    };
    d.bars[0] = bar(pci::BAR0_SIZE, pci::BAR0_64BIT);
    d.bars[2] = bar(pci::BAR2_SIZE, pci::BAR2_64BIT);
    d.msix = MsixConfig {
        vectors: pci::MSIX_VECTORS,
        table_bar: pci::MSIX_TABLE_BAR,
        table_offset: pci::MSIX_TABLE_OFFSET,
        pba_bar: pci::MSIX_PBA_BAR,
        pba_offset: pci::MSIX_PBA_OFFSET,
    };
    d
}

/// The bits the model stores for a write at `off` (4-byte aligned): those of an RW register of
/// the map (JOB_PRIORITY: its field; bits above it read 0), none elsewhere.
fn stored_bits(off: u64) -> u32 {
    regs::lookup(off).filter(|r| r.offset == off).map_or(0, |r| r.stored_bits())
}

#[derive(Default)]
struct Regs {
    r: HashMap<u64, u32>,
    status: u32,
    error: u32,
    cycles: u64,
    jobs_done: u32,
    busy: bool,
    nic_rx: u32,
    nic_tx: u32,
    uart_rx: u32,
}

impl Regs {
    fn get(&self, off: u64) -> u32 {
        *self.r.get(&off).unwrap_or(&0)
    }

    /// The register at `off` (4-byte aligned). Not modelled, read 0: BUSY_CYCLES, IDLE_CYCLES,
    /// DMA_WAIT.
    fn read(&self, off: u64) -> u32 {
        match off {
            regs::ID => regs::ID_VALUE,
            regs::VERSION => regs::VERSION_VALUE,
            regs::ARRAY => field_put(array::ROWS, ROWS) | field_put(array::COLS, COLS),
            regs::MAX_DIM => MAX_DIM,
            regs::STATUS => self.status | if self.busy { status::BUSY } else { 0 },
            regs::ERROR => self.error,
            regs::CYCLES_LO => self.cycles as u32,
            regs::CYCLES_HI => (self.cycles >> 32) as u32,
            regs::JOBS_DONE => self.jobs_done,
            regs::NIC_RX_FRAMES => self.nic_rx,
            regs::NIC_TX_FRAMES => self.nic_tx,
            regs::UART_RX_BYTES => self.uart_rx,
            _ if stored_bits(off) != 0 => self.get(off),
            _ => 0,
        }
    }
}

struct Dev {
    link: DeviceLoop<ZmqTransport>,
    regs: Regs,
    next_tag: u32,
    delay: Duration,
}

impl Dev {
    fn reset(&mut self) -> Result<(), TransportError> {
        self.regs = Regs::default();
        self.link.send(Message::Serial(UART_BANNER.to_vec()))?;
        Ok(())
    }

    /// True while session `s` is up and its host alive; a job stops waiting for DMA otherwise.
    fn serving(&self, s: Option<u64>) -> bool {
        matches!(self.link.engine().state(), DeviceState::Up { session, host_alive: true } if Some(session) == s)
    }

    /// Handles one event of the session (timers run meanwhile); returns a DMA read completion
    /// instead of handling it.
    fn step(&mut self, timeout: Duration) -> Result<Option<DmaReadResp>, TransportError> {
        let msg = match self.link.poll(timeout)? {
            Some(DeviceEvent::Deliver(m)) => m,
            // A new session starts from reset, as the RTL does after INIT.
            Some(DeviceEvent::SessionStarted { .. }) => {
                self.reset()?;
                return Ok(None);
            }
            // Host lost or back, session ended: the engine logs it; the model keeps its state.
            _ => return Ok(None),
        };
        match msg {
            Message::Reset => self.reset()?,
            Message::MmioRead(r) => {
                let data = if r.bar.get() == 0 {
                    let lo = self.regs.read(r.offset & !3) as u64;
                    let v = if r.size == AccessSize::B8 {
                        lo | (self.regs.read((r.offset & !3) + 4) as u64) << 32
                    } else {
                        lo >> (8 * (r.offset & 3))
                    };
                    v & r.size.mask()
                } else {
                    0
                };
                self.link.send(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }))?;
            }
            Message::MmioWrite(w) if w.bar.get() == 0 => {
                let off = w.offset & !3;
                // (register, value, bytes written), as the RTL's byte strobes: an access of 1, 2 or
                // 4 bytes writes those bytes of one register, one of 8 bytes two whole registers.
                let words = if w.size == AccessSize::B8 {
                    vec![(off, w.data as u32, u32::MAX), (off + 4, (w.data >> 32) as u32, u32::MAX)]
                } else {
                    let shift = 8 * (w.offset & 3);
                    vec![(off, ((w.data & w.size.mask()) as u32) << shift, (w.size.mask() as u32) << shift)]
                };
                for (o, v, lanes) in words {
                    self.write_reg(o, v, lanes)?;
                }
            }
            Message::DmaReadResp(r) => return Ok(Some(r)),
            Message::Serial(bytes) => {
                self.regs.uart_rx = self.regs.uart_rx.wrapping_add(bytes.len() as u32);
                self.link.send(Message::Serial(bytes))?;
            }
            Message::NicFrame(mut f) => {
                self.regs.nic_rx += 1;
                if f.len() >= 12 {
                    let (dst, src) = f.split_at_mut(6);
                    dst.swap_with_slice(&mut src[..6]);
                }
                self.regs.nic_tx += 1;
                self.link.send(Message::NicFrame(f))?;
            }
            _ => {}
        }
        Ok(None)
    }

    /// A write of the bytes `lanes` (a mask of whole bytes) of `v` to the register at `off` (`v`
    /// is 0 outside `lanes`).
    fn write_reg(&mut self, off: u64, v: u32, lanes: u32) -> Result<(), TransportError> {
        match off {
            regs::CTRL => {
                if v & ctrl::CLEAR != 0 {
                    self.regs.status = 0;
                    self.regs.error = ErrorCode::Ok.code();
                }
                if v & ctrl::START != 0 {
                    if self.regs.busy {
                        self.regs.error = ErrorCode::Busy.code();
                        self.regs.status |= status::ERROR;
                    } else {
                        self.job(v & ctrl::IRQ_EN != 0)?;
                    }
                }
            }
            _ if stored_bits(off) != 0 => {
                let merged = (self.regs.get(off) & !lanes) | (v & lanes);
                self.regs.r.insert(off, merged & stored_bits(off));
            }
            _ => {}
        }
        Ok(())
    }

    /// Ok(None): the DMA failed (error completion, or no answer within 30 s).
    fn dma_read(&mut self, addr: u64, len: usize) -> Result<Option<Vec<u8>>, TransportError> {
        let session = self.link.engine().session();
        let reqs = Message::split_dma_read(self.next_tag, GuestAddr(addr), len as u64);
        self.next_tag = self.next_tag.wrapping_add(reqs.len() as u32);
        let mut pending: HashMap<u32, (usize, usize)> = HashMap::new();
        let mut off = 0;
        for r in &reqs {
            pending.insert(r.tag, (off, r.len as usize));
            off += r.len as usize;
            if !self.link.send(Message::DmaRead(*r))? {
                return Ok(None); // no session
            }
        }
        let mut buf = vec![0u8; len];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.is_empty() {
            if Instant::now() > deadline || !self.serving(session) {
                return Ok(None);
            }
            if let Some(resp) = self.step(Duration::from_millis(10))? {
                if let Some((o, l)) = pending.remove(&resp.tag) {
                    if resp.status != Status::Ok || resp.data.len() != l {
                        return Ok(None);
                    }
                    buf[o..o + l].copy_from_slice(&resp.data);
                }
            }
        }
        Ok(Some(buf))
    }

    fn job(&mut self, irq: bool) -> Result<(), TransportError> {
        let g = |o| self.regs.get(o);
        let (m, n, k) = (g(regs::M), g(regs::N), g(regs::K));
        let lda = if g(regs::LDA) == 0 { k } else { g(regs::LDA) };
        let ldb = if g(regs::LDB) == 0 { n } else { g(regs::LDB) };
        let ldc = if g(regs::LDC) == 0 { n } else { g(regs::LDC) };
        let addr = |lo: u64| g(lo) as u64 | (g(lo + 4) as u64) << 32;
        let (a_addr, b_addr, c_addr) = (addr(regs::A_ADDR_LO), addr(regs::B_ADDR_LO), addr(regs::C_ADDR_LO));
        self.regs.status = 0;
        let check = if m == 0 || n == 0 || k == 0 {
            ErrorCode::ZeroDim
        } else if m > MAX_DIM || n > MAX_DIM || k > MAX_DIM {
            ErrorCode::DimTooLarge
        } else if lda < k || ldb < n || ldc < n {
            ErrorCode::BadStride
        } else if c_addr % 4 != 0 {
            ErrorCode::Misaligned
        } else {
            ErrorCode::Ok
        };
        self.regs.error = check.code();
        let session = self.link.engine().session();
        if check == ErrorCode::Ok {
            self.regs.busy = true;
            let t0 = Instant::now();
            let result = self.compute(m, n, k, lda, ldb, ldc, a_addr, b_addr, c_addr);
            while t0.elapsed() < self.delay && self.serving(session) {
                self.step(Duration::from_millis(5))?;
            }
            self.regs.busy = false;
            if result? {
                self.regs.cycles = (m as u64 * n as u64 * k as u64).div_ceil((ROWS * COLS) as u64);
            } else {
                self.regs.error = ErrorCode::DmaError.code();
            }
        }
        self.regs.jobs_done += 1;
        self.regs.status = status::DONE | if self.regs.error != ErrorCode::Ok.code() { status::ERROR } else { 0 };
        if irq && self.serving(session) {
            let v = self.regs.get(regs::MSIX_VECTOR) as u16;
            self.link.send(Message::Msix(Msix { vector: v }))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        m: u32,
        n: u32,
        k: u32,
        lda: u32,
        ldb: u32,
        ldc: u32,
        a_addr: u64,
        b_addr: u64,
        c_addr: u64,
    ) -> Result<bool, TransportError> {
        let (m, n, k, lda, ldb, ldc) = (m as usize, n as usize, k as usize, lda as usize, ldb as usize, ldc as usize);
        let Some(a) = self.dma_read(a_addr, (m - 1) * lda + k)? else {
            return Ok(false);
        };
        let Some(b) = self.dma_read(b_addr, (k - 1) * ldb + n)? else {
            return Ok(false);
        };
        for i in 0..m {
            let mut row = vec![0u8; n * 4];
            for j in 0..n {
                let mut acc = 0i32;
                for kk in 0..k {
                    acc = acc.wrapping_add((a[i * lda + kk] as i8 as i32) * (b[kk * ldb + j] as i8 as i32));
                }
                row[j * 4..j * 4 + 4].copy_from_slice(&acc.to_le_bytes());
            }
            for w in Message::split_dma_write(GuestAddr(c_addr + (i * ldc * 4) as u64), &row) {
                self.link.send(Message::DmaWrite(w))?;
            }
        }
        Ok(true)
    }
}

fn main() -> ExitCode {
    let mut endpoint = None;
    let mut delay_ms = 0u64;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--endpoint" => endpoint = it.next(),
            "--delay-ms" => delay_ms = it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            "--max-cycles" | "--waves" => {
                it.next();
            }
            "--stats" => {}
            "-h" | "--help" => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("cosim-fake-gemm: unknown argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(endpoint) = endpoint else {
        eprintln!("cosim-fake-gemm: --endpoint is required\n\n{HELP}");
        return ExitCode::from(2);
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COSIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let run = || -> Result<(), TransportError> {
        let ep = Endpoint::parse(&endpoint)?;
        let t = ZmqTransport::open(&ep, Side::Device, &ZmqOptions::default())?;
        eprintln!("cosim-sim: ready endpoint={endpoint}");
        let mut dev = Dev {
            link: DeviceLoop::device(t, format!("cosim-fake-gemm {endpoint}"), Caps::all(), config()),
            regs: Regs::default(),
            next_tag: 1,
            delay: Duration::from_millis(delay_ms),
        };
        loop {
            dev.step(Duration::from_millis(20))?;
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
