//! The mediator's state machine, sans I/O (docs/mediator.md).
//!
//! One [`HostSession`] toward the simulation and one [`DeviceSession`] per VM, the session engines
//! every peer runs. The caller passes the time in, feeds every frame received from the simulation
//! ([`Mediator::handle_sim`]) or from VM `i` ([`Mediator::handle_vm`]) and the timer, sends what
//! [`Mediator::poll_output`] returns, and writes the [`JobRecord`]s of [`Mediator::poll_record`].
//! Nothing here blocks or reads a clock, so every rule is tested with simulated time.
//!
//! Per VM the mediator keeps a copy of the job model's registers and presents a whole device:
//! context and local registers are that VM's copy, its status says busy while its job is queued
//! or running, results are captured from the RTL when its job ends. A doorbell write queues a job
//! ([`crate::sched`]); when the RTL is free the mediator writes the job's context to the RTL and
//! starts it with the completion interrupt enabled. While it runs, the RTL's DMA goes to that VM
//! only; its completion interrupt makes the mediator read the result registers, which become
//! that VM's, then the VM gets its interrupt (if it asked for one) and the next job starts.
//! Isolation rests on one rule: DMA and interrupts are routed by the job that runs, tagged with
//! the VM's epoch, which changes whenever the VM resets, is lost or starts a new session, so a
//! job that outlives its VM's context completes into nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use cosim_protocol::session::{
    describe_down, DeviceEvent, DeviceSession, DeviceSessionConfig, HostEvent, HostSession, HostSessionConfig, Timing,
};
use cosim_protocol::{
    AccessSize, BarIndex, Caps, DecodeError, DeviceConfig, DmaReadResp, Message, MmioRead, MmioReadResp, MmioWrite,
    Msix, Status,
};
use serde::Serialize;

use crate::config::VmConfig;
use crate::model::{JobModel, Priority, RegClass, REG_BYTES};
use crate::sched::{effective, Scheduler};

/// Log target of the mediator.
pub const LOG_TARGET: &str = "cosim::mediator";

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The simulation.
    Sim,
    /// VM `i` (index into the configuration's VMs).
    Vm(usize),
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Ran; the RTL reported no error.
    Done,
    /// Ran and the RTL reported an error, or the job was lost (simulation gone, job timeout).
    Failed,
    /// Its VM went away or reset before it ended: removed from the queue, or completed into nothing.
    Cancelled,
}

/// One line of the job log.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// Submission order over all VMs.
    pub seq: u64,
    /// VM name.
    pub vm: String,
    /// VM pool.
    pub pool: String,
    /// Effective priority.
    pub priority: Priority,
    /// How it ended.
    pub outcome: Outcome,
    /// Microseconds since the mediator started.
    pub submitted_us: u64,
    /// When it started on the RTL (none if cancelled while queued).
    pub started_us: Option<u64>,
    /// When it ended.
    pub finished_us: u64,
    /// Time in the queue.
    pub queued_us: u64,
    /// RTL cycles of the job (the job model's `report.cycles`; 0 if unknown).
    pub cycles: u64,
    /// RTL DMA wait cycles (`report.dma_wait`).
    pub dma_wait: u64,
    /// The error code the VM sees.
    pub error: u32,
}

/// Counters of one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VmStats {
    /// Jobs submitted.
    pub jobs: u64,
    /// Jobs that ran without error.
    pub done: u64,
    /// Jobs that ran with an error or were lost.
    pub failed: u64,
    /// Jobs cancelled (VM gone or reset).
    pub cancelled: u64,
    /// Starts refused because the VM's job was still queued or running.
    pub refused: u64,
    /// Jobs whose requested priority was above the VM's highest allowed.
    pub capped: u64,
    /// RTL cycles of its jobs.
    pub cycles: u64,
    /// Total time its jobs waited in the queue.
    pub queued_us_total: u64,
    /// Longest wait.
    pub queued_us_max: u64,
    /// Bytes the RTL read from its memory.
    pub dma_read_bytes: u64,
    /// Bytes the RTL wrote to its memory.
    pub dma_write_bytes: u64,
    /// Interrupts delivered to it.
    pub interrupts: u64,
    /// Register reads forwarded to the RTL.
    pub passthrough_reads: u64,
    /// Register reads answered from its copy.
    pub local_reads: u64,
    /// Sessions its QEMU started.
    pub sessions: u64,
}

/// Counters of the mediator as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediatorStats {
    /// DMA reads of the RTL that belonged to no live job (answered with an error).
    pub dma_reads_refused: u64,
    /// DMA writes of the RTL that belonged to no live job (dropped).
    pub dma_writes_dropped: u64,
    /// Interrupts of the RTL while no job ran (dropped).
    pub stray_interrupts: u64,
    /// NIC frames and serial bytes (not shared: dropped).
    pub nic_serial_dropped: u64,
    /// Jobs failed by the job timeout.
    pub job_timeouts: u64,
    /// Frames from VMs before the simulation's configuration was known.
    pub vm_frames_before_sim: u64,
    /// Accesses to other BARs or beyond the registers' BAR (reads answered as unsupported, writes ignored).
    pub other_bar_accesses: u64,
}

/// The RTL's busy/idle counters seen at job completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RtlCounters {
    /// Busy cycles between the first and the last completion seen.
    pub busy_cycles: u64,
    /// Idle cycles in the same window.
    pub idle_cycles: u64,
    /// `busy / (busy + idle)`; 0 with fewer than two completions.
    pub busy_fraction: f64,
}

/// Settings of a [`Mediator`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The design's job model.
    pub model: JobModel,
    /// The VMs.
    pub vms: Vec<VmConfig>,
    /// Name of the simulation link in logs.
    pub sim_name: String,
    /// How long the first handshake with the simulation may take.
    pub handshake_timeout: Duration,
    /// A job running longer is failed and the RTL reset.
    pub job_timeout: Duration,
    /// Our instance number (random per process).
    pub instance: u64,
    /// Seed of the session numbers.
    pub seed: u64,
    /// Protocol timing (the default in real runs).
    pub timing: Timing,
}

#[derive(Debug, Clone)]
struct JobCtx {
    epoch: u64,
    submitted: Instant,
    context: Vec<(u64, u32)>,
    irq: bool,
    vector: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started on the RTL, waiting for its completion interrupt.
    Running,
    /// Interrupt seen, reading the results.
    Collecting,
}

#[derive(Debug)]
struct Running {
    seq: u64,
    vm: usize,
    priority: Priority,
    ctx: JobCtx,
    started: Instant,
    phase: Phase,
    /// Outstanding result reads: tag -> (offset, size).
    reads: HashMap<u32, (u64, AccessSize)>,
    /// Register values read so far.
    values: BTreeMap<u64, u32>,
}

#[derive(Debug)]
struct PassRead {
    vm: usize,
    epoch: u64,
    tag: u32,
    offset: u64,
    size: AccessSize,
}

#[derive(Debug)]
struct Vm {
    cfg: VmConfig,
    session: Option<DeviceSession>,
    regs: BTreeMap<u64, u32>,
    status_bits: u32,
    jobs_finished: u32,
    job: Option<u64>,
    epoch: u64,
    stats: VmStats,
}

/// The mediator. See the module docs.
#[derive(Debug)]
pub struct Mediator {
    model: JobModel,
    classes: BTreeMap<u64, RegClass>,
    bar: BarIndex,
    epoch0: Instant,
    timing: Timing,
    instance: u64,
    job_timeout: Duration,
    sim: HostSession,
    sim_cfg: Option<(Caps, DeviceConfig)>,
    vms: Vec<Vm>,
    sched: Scheduler<JobCtx>,
    running: Option<Running>,
    /// The job whose results are being read (its interrupt arrived).
    collecting: Option<Running>,
    /// The job model's `interrupt.completion_only`: start the next job behind the result reads.
    pipelined: bool,
    pass_reads: HashMap<u32, PassRead>,
    /// Values of the model's `constant` registers, once read from the RTL.
    constants: BTreeMap<u64, u32>,
    /// Outstanding reads that fill [`Self::constants`]: tag -> offset.
    constant_reads: HashMap<u32, u64>,
    /// After a reset of the RTL: the tag of a read sent behind the RESET. Until it completes,
    /// whatever the RTL sent before it took the reset may still arrive (the device-to-host
    /// channel is ordered), so DMA is refused, interrupts are dropped and no job starts.
    fence: Option<u32>,
    /// RTL DMA read tag -> (VM, epoch) it was forwarded to.
    dma_owner: HashMap<u32, (usize, u64)>,
    out: VecDeque<(Peer, Message)>,
    records: VecDeque<JobRecord>,
    /// The RTL's busy/idle counters at the last completion of this reset segment.
    counters_prev: Option<(u64, u64)>,
    /// Busy and idle cycles summed over the windows between completions.
    counters_sum: (u64, u64),
    stats: MediatorStats,
    fatal: Option<String>,
}

fn access_regs(offset: u64, size: AccessSize) -> impl Iterator<Item = u64> {
    let first = offset & !(REG_BYTES - 1);
    let last = (offset + size.bytes() as u64 - 1) & !(REG_BYTES - 1);
    (first..=last).step_by(REG_BYTES as usize)
}

fn us(since: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(since).as_micros() as u64
}

impl Mediator {
    /// A mediator that starts its handshake with the simulation at `now`.
    pub fn new(s: Settings, now: Instant) -> Self {
        let classes = s.model.classes().expect("a loaded job model is valid");
        let bar = BarIndex::new(s.model.bar).expect("a loaded job model has a valid BAR");
        let sim = HostSession::new(
            HostSessionConfig {
                name: s.sim_name,
                caps: Caps::MSIX,
                instance: s.instance,
                seed: s.seed,
                handshake_timeout: s.handshake_timeout,
                timing: s.timing,
            },
            now,
        );
        let vms = s
            .vms
            .into_iter()
            .map(|cfg| Vm {
                cfg,
                session: None,
                regs: BTreeMap::new(),
                status_bits: 0,
                jobs_finished: 0,
                job: None,
                epoch: 0,
                stats: VmStats::default(),
            })
            .collect();
        let mut m = Self {
            model: s.model,
            classes,
            bar,
            epoch0: now,
            timing: s.timing,
            instance: s.instance,
            job_timeout: s.job_timeout,
            sim,
            sim_cfg: None,
            vms,
            sched: Scheduler::new(),
            running: None,
            collecting: None,
            pipelined: false,
            pass_reads: HashMap::new(),
            constants: BTreeMap::new(),
            constant_reads: HashMap::new(),
            fence: None,
            dma_owner: HashMap::new(),
            out: VecDeque::new(),
            records: VecDeque::new(),
            counters_prev: None,
            counters_sum: (0, 0),
            stats: MediatorStats::default(),
            fatal: None,
        };
        m.pipelined = m.model.interrupt.as_ref().is_some_and(|i| i.completion_only);
        m.drain_sim(now);
        m
    }

    // ---------------------------------------------------------------------------------------
    // The caller's interface
    // ---------------------------------------------------------------------------------------

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<(Peer, Message)> {
        self.out.pop_front()
    }

    /// The next finished job.
    pub fn poll_record(&mut self) -> Option<JobRecord> {
        self.records.pop_front()
    }

    /// Set when the mediator cannot go on (the first handshake with the simulation failed).
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// True while the session with the simulation is up.
    pub fn sim_up(&self) -> bool {
        self.sim.is_up()
    }

    /// True while VM `i`'s QEMU has a live session.
    pub fn vm_up(&self, i: usize) -> bool {
        self.vms[i]
            .session
            .as_ref()
            .is_some_and(|s| matches!(s.state(), cosim_protocol::session::DeviceState::Up { host_alive: true, .. }))
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// VM `i`'s configuration and counters.
    pub fn vm_stats(&self, i: usize) -> (&VmConfig, &VmStats) {
        (&self.vms[i].cfg, &self.vms[i].stats)
    }

    /// The mediator's own counters.
    pub fn stats(&self) -> &MediatorStats {
        &self.stats
    }

    /// How busy the RTL was between job completions (summed over the windows between two
    /// completions with no reset of the RTL in between).
    pub fn rtl_counters(&self) -> RtlCounters {
        let (busy, idle) = self.counters_sum;
        let total = busy.saturating_add(idle);
        RtlCounters {
            busy_cycles: busy,
            idle_cycles: idle,
            busy_fraction: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
        }
    }

    /// Jobs waiting per priority (high, medium, low), and whether one runs.
    pub fn queue_depth(&self) -> ([usize; 3], bool) {
        (self.sched.depth(), self.running.is_some() || self.collecting.is_some())
    }

    /// When [`Self::handle_timeout`] should run next.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let mut t = self.sim.next_timeout(now);
        for v in &self.vms {
            if let Some(s) = &v.session {
                t = t.min(s.next_timeout(now));
            }
        }
        for r in self.running.iter().chain(self.collecting.iter()) {
            t = t.min(r.started + self.job_timeout);
        }
        t
    }

    /// Timers: heartbeats and liveness of every session, the job timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sim.handle_timeout(now);
        self.drain_sim(now);
        for i in 0..self.vms.len() {
            if let Some(s) = self.vms[i].session.as_mut() {
                s.handle_timeout(now);
            }
            self.drain_vm(i, now);
        }
        let overdue = self
            .running
            .iter()
            .chain(self.collecting.iter())
            .any(|r| now.saturating_duration_since(r.started) >= self.job_timeout);
        if overdue {
            self.job_timed_out(now);
        }
    }

    /// A frame from the simulation.
    pub fn handle_sim(&mut self, now: Instant, frame: Result<Message, DecodeError>) {
        match frame {
            Ok(m) => self.sim.handle_message(now, m),
            Err(e) => self.sim.handle_decode_error(now, e),
        }
        self.drain_sim(now);
    }

    /// A frame from VM `i`.
    pub fn handle_vm(&mut self, i: usize, now: Instant, frame: Result<Message, DecodeError>) {
        let Some(s) = self.vms[i].session.as_mut() else {
            // No configuration to answer INIT with yet: QEMU repeats INIT until we have one.
            self.stats.vm_frames_before_sim += 1;
            return;
        };
        match frame {
            Ok(m) => s.handle_message(now, m),
            Err(e) => s.handle_decode_error(now, e),
        }
        self.drain_vm(i, now);
    }

    /// VM `i` does not take messages (its queue is full: the QEMU is stopped or stuck). Its job
    /// is cancelled as if it had gone; it gets a new context when it starts a session again.
    pub fn vm_unreachable(&mut self, i: usize, now: Instant, why: &str) {
        if self.vms[i].job.is_some() || self.vms[i].session.as_ref().is_some_and(|s| s.session().is_some()) {
            tracing::warn!(target: LOG_TARGET, "{}: cannot send to its QEMU ({why}); its job is cancelled", self.vms[i].cfg.name);
        }
        self.vm_gone(i, now);
        // Messages already queued for it are dropped with it.
        self.out.retain(|(p, _)| *p != Peer::Vm(i));
    }

    /// Leaving: jobs still queued or running are logged as cancelled; GOODBYE to the simulation
    /// and to every VM.
    pub fn close(&mut self, now: Instant) {
        for r in self.running.take().into_iter().chain(self.collecting.take()) {
            self.record_cancelled(r.vm, r.seq, r.priority, r.ctx.submitted, Some(r.started), now);
        }
        for i in 0..self.vms.len() {
            for q in self.sched.cancel_vm(i) {
                self.record_cancelled(i, q.seq, q.priority, q.job.submitted, None, now);
            }
        }
        self.sim.close();
        while let Some(ev) = self.sim.poll_event() {
            if let HostEvent::Send(m) = ev {
                self.out.push_back((Peer::Sim, m));
            }
        }
        for i in 0..self.vms.len() {
            if let Some(s) = self.vms[i].session.as_mut() {
                s.close();
                while let Some(ev) = s.poll_event() {
                    if let DeviceEvent::Send(m) = ev {
                        self.out.push_back((Peer::Vm(i), m));
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // The simulation side
    // ---------------------------------------------------------------------------------------

    fn drain_sim(&mut self, now: Instant) {
        while let Some(ev) = self.sim.poll_event() {
            match ev {
                HostEvent::Send(m) => self.out.push_back((Peer::Sim, m)),
                HostEvent::Up(cfg) => self.sim_came_up(now, cfg.caps, cfg.device),
                HostEvent::ReadDone(r) => self.sim_read_done(now, r.tag, r.status, r.data),
                HostEvent::ReadAborted { tag } => self.sim_read_done(now, tag, Status::CompleterAbort, u64::MAX),
                HostEvent::Deliver(m) => self.on_rtl_message(now, m),
                HostEvent::Down(why) => self.sim_went_down(now, &describe_down(&why)),
                HostEvent::Failed(e) => {
                    self.fatal = Some(format!("no session with the simulation: {e}"));
                }
            }
        }
    }

    fn sim_came_up(&mut self, now: Instant, caps: Caps, device: DeviceConfig) {
        let first = self.sim_cfg.is_none();
        // NIC and UART are not shared: the VMs see a device without them.
        let vm_caps = caps & Caps::MSIX;
        self.sim_cfg = Some((vm_caps, device.clone()));
        if first {
            tracing::info!(target: LOG_TARGET, "simulation up ({}); answering {} VM(s)", self.sim.name(), self.vms.len());
            for v in &mut self.vms {
                v.session = Some(DeviceSession::new(DeviceSessionConfig {
                    name: format!("{} ({})", v.cfg.name, v.cfg.endpoint),
                    caps: vm_caps,
                    device: device.clone(),
                    instance: self.instance,
                    timing: self.timing,
                }));
            }
        } else {
            tracing::info!(target: LOG_TARGET, "simulation back; {} job(s) queued", self.sched.len());
        }
        // The mediator owns the device: whatever a previous host (or this mediator before the
        // link dropped) left running is reset.
        self.reset_rtl(now, "the session with the simulation started");
    }

    /// Resets the RTL: fails the jobs on it, answers what was outstanding, reads the constants
    /// again and fences: nothing the RTL sent before it took the reset reaches a VM, and the
    /// next job starts when the fence read completes.
    fn reset_rtl(&mut self, now: Instant, why: &str) {
        tracing::debug!(target: LOG_TARGET, "resetting the RTL: {why}");
        self.sim.send(Message::Reset);
        for (tag, p) in std::mem::take(&mut self.pass_reads) {
            self.sim.abandon_read(tag);
            if self.vms[p.vm].epoch == p.epoch {
                if let Some(s) = self.vms[p.vm].session.as_mut() {
                    s.send(Message::MmioReadResp(MmioReadResp {
                        tag: p.tag,
                        status: Status::CompleterAbort,
                        data: p.size.mask(),
                    }));
                }
            }
        }
        for r in self.running.iter().chain(self.collecting.iter()) {
            for tag in r.reads.keys() {
                self.sim.abandon_read(*tag);
            }
        }
        for tag in std::mem::take(&mut self.constant_reads).into_keys() {
            self.sim.abandon_read(tag);
        }
        if let Some(tag) = self.fence.take() {
            self.sim.abandon_read(tag);
        }
        // Tag 0 is never a read's: it holds the fence closed until the real one is sent below.
        self.fence = Some(0);
        self.dma_owner.clear();
        self.counters_prev = None;
        self.drain_sim(now);
        let lost = format!("{why} (the RTL was reset)");
        self.fail_collecting(now, &lost);
        self.fail_running(now, &lost);
        // The constant registers, read again (answered by the RTL until then).
        self.constants.clear();
        for off in self.model.constant.clone() {
            if let Some(tag) = self.sim.mmio_read(self.bar, off, AccessSize::B4) {
                self.constant_reads.insert(tag, off);
            }
        }
        self.fence = self.sim.mmio_read(self.bar, self.model.status.offset, AccessSize::B4);
        if self.fence.is_none() {
            tracing::debug!(target: LOG_TARGET, "no fence read: the simulation is not up");
        }
        self.drain_sim(now);
        for i in 0..self.vms.len() {
            self.drain_vm(i, now);
        }
        self.try_start(now);
    }

    fn sim_went_down(&mut self, now: Instant, why: &str) {
        tracing::error!(target: LOG_TARGET, "simulation lost: {why}; queued jobs wait for it to come back");
        self.dma_owner.clear();
        self.fence = None;
        self.constant_reads.clear();
        self.fail_collecting(now, "the simulation went away before the results were read");
        self.fail_running(now, "the simulation went away during the job");
    }

    fn on_rtl_message(&mut self, now: Instant, m: Message) {
        match m {
            Message::DmaRead(r) => {
                if let Some(vm) = self.dma_target() {
                    let v = &mut self.vms[vm];
                    if v.session.as_mut().is_some_and(|s| s.send(Message::DmaRead(r))) {
                        v.stats.dma_read_bytes += u64::from(r.len);
                        self.dma_owner.insert(r.tag, (vm, v.epoch));
                        self.drain_vm(vm, now);
                        return;
                    }
                }
                self.stats.dma_reads_refused += 1;
                tracing::debug!(target: LOG_TARGET, "RTL DMA read {:#x}+{} belongs to no live job: error response", r.addr.0, r.len);
                self.sim.send(Message::DmaReadResp(DmaReadResp {
                    tag: r.tag,
                    status: Status::CompleterAbort,
                    data: Vec::new(),
                }));
                self.drain_sim(now);
            }
            Message::DmaWrite(w) => {
                if let Some(vm) = self.dma_target() {
                    let v = &mut self.vms[vm];
                    let len = w.data.len() as u64;
                    if v.session.as_mut().is_some_and(|s| s.send(Message::DmaWrite(w))) {
                        v.stats.dma_write_bytes += len;
                        self.drain_vm(vm, now);
                        return;
                    }
                }
                self.stats.dma_writes_dropped += 1;
            }
            Message::Msix(x) => self.rtl_interrupt(now, x.vector),
            Message::NicFrame(_) | Message::Serial(_) => self.stats.nic_serial_dropped += 1,
            other => {
                tracing::warn!(target: LOG_TARGET, "unexpected {:?} from the simulation dropped", other.opcode())
            }
        }
    }

    /// The VM the running job's DMA goes to, if that job's VM context is still the one it was
    /// submitted in.
    fn dma_target(&self) -> Option<usize> {
        if self.fence.is_some() {
            return None;
        }
        // Without completion_only, a job whose STATUS is being read may still be running.
        let r = self.running.as_ref().or(if self.pipelined { None } else { self.collecting.as_ref() })?;
        (self.vms[r.vm].epoch == r.ctx.epoch).then_some(r.vm)
    }

    fn rtl_interrupt(&mut self, now: Instant, vector: u16) {
        if self.fence.is_some() {
            self.stats.stray_interrupts += 1;
            tracing::debug!(target: LOG_TARGET, "RTL interrupt {vector} from before the reset: dropped");
            return;
        }
        let Some(mut r) = self.running.take() else {
            self.stats.stray_interrupts += 1;
            tracing::debug!(target: LOG_TARGET, "RTL interrupt {vector} while no job runs: dropped");
            return;
        };
        if self.collecting.is_some() {
            // The previous job's results are still being read (cannot happen with MMIO in order).
            tracing::warn!(target: LOG_TARGET, "RTL interrupt {vector} before the previous job's results were read: dropped");
            self.running = Some(r);
            return;
        }
        let m = &self.model;
        let mut wanted: Vec<(u64, AccessSize)> =
            vec![(m.status.offset, AccessSize::B4), (m.error.offset, AccessSize::B4)];
        wanted.extend(m.results.iter().map(|&o| (o, AccessSize::B4)));
        if let Some(c) = &m.counters {
            wanted.push((c.busy, AccessSize::B8));
            wanted.push((c.idle, AccessSize::B8));
        }
        r.phase = Phase::Collecting;
        r.values.clear();
        r.reads.clear();
        for (off, size) in wanted {
            let Some(tag) = self.sim.mmio_read(self.bar, off, size) else {
                self.collecting = Some(r);
                self.drain_sim(now);
                self.fail_collecting(now, "the simulation went away while the results were read");
                return;
            };
            r.reads.insert(tag, (off, size));
        }
        self.collecting = Some(r);
        self.drain_sim(now);
        if self.pipelined {
            self.try_start(now);
        }
    }

    fn sim_read_done(&mut self, now: Instant, tag: u32, status: Status, data: u64) {
        if self.fence == Some(tag) {
            self.fence = None;
            self.try_start(now);
            return;
        }
        if let Some(off) = self.constant_reads.remove(&tag) {
            if status == Status::Ok {
                self.constants.insert(off, data as u32);
            }
            return;
        }
        if let Some(p) = self.pass_reads.remove(&tag) {
            let v = &mut self.vms[p.vm];
            if v.epoch != p.epoch {
                return;
            }
            let data = if status == Status::Ok { self.overlay(p.vm, p.offset, p.size, data) } else { p.size.mask() };
            if let Some(s) = self.vms[p.vm].session.as_mut() {
                s.send(Message::MmioReadResp(MmioReadResp { tag: p.tag, status, data }));
            }
            self.drain_vm(p.vm, now);
            return;
        }
        let Some(r) = self.collecting.as_mut() else {
            return;
        };
        let Some((off, size)) = r.reads.remove(&tag) else {
            return;
        };
        if status != Status::Ok {
            self.fail_collecting(now, "a result register read failed");
            return;
        }
        r.values.insert(off, data as u32);
        if size == AccessSize::B8 {
            r.values.insert(off + REG_BYTES, (data >> 32) as u32);
        }
        if r.reads.is_empty() {
            self.results_read(now);
        }
    }

    /// All result reads of the running job are back.
    fn results_read(&mut self, now: Instant) {
        let Some(mut r) = self.collecting.take() else {
            return;
        };
        let m = &self.model;
        let rtl_status = r.values.get(&m.status.offset).copied().unwrap_or(0);
        if let Some(c) = &m.counters {
            let get64 = |o: u64| {
                u64::from(r.values.get(&o).copied().unwrap_or(0))
                    | (u64::from(r.values.get(&(o + REG_BYTES)).copied().unwrap_or(0)) << 32)
            };
            let now_c = (get64(c.busy), get64(c.idle));
            if let Some((b0, i0)) = self.counters_prev {
                if now_c.0 >= b0 && now_c.1 >= i0 {
                    self.counters_sum.0 = self.counters_sum.0.saturating_add(now_c.0 - b0);
                    self.counters_sum.1 = self.counters_sum.1.saturating_add(now_c.1 - i0);
                }
            }
            self.counters_prev = Some(now_c);
        }
        let completed = rtl_status & m.status.busy == 0 && rtl_status & m.status.done != 0;
        if !completed && self.pipelined {
            // The design promised that its interrupt means completion, and the job already
            // behind this one may have been refused: start over from a reset.
            tracing::error!(target: LOG_TARGET,
                "job {} of {}: interrupt, but STATUS is {rtl_status:#x} (not done): resetting the RTL", r.seq, self.vms[r.vm].cfg.name);
            self.collecting = Some(r);
            self.reset_rtl(now, "an interrupt that was not the job's completion");
            return;
        }
        if !completed {
            // Not the completion (an interrupt of another kind): keep waiting.
            r.phase = Phase::Running;
            r.reads.clear();
            self.running = Some(r);
            return;
        }
        let error = r.values.get(&m.error.offset).copied().unwrap_or(0);
        let get64 = |o: Option<u64>| {
            o.map_or(0, |o| {
                u64::from(r.values.get(&o).copied().unwrap_or(0))
                    | (u64::from(r.values.get(&(o + REG_BYTES)).copied().unwrap_or(0)) << 32)
            })
        };
        let cycles = get64(m.report.cycles);
        let dma_wait = get64(m.report.dma_wait);
        let failed = m.status.error != 0 && rtl_status & m.status.error != 0;
        let results: Vec<(u64, u32)> = m.results.iter().map(|o| (*o, r.values.get(o).copied().unwrap_or(0))).collect();
        let err_bit = if failed { m.status.error } else { 0 };
        let outcome = if failed { Outcome::Failed } else { Outcome::Done };
        self.finish(now, r, outcome, error, err_bit, &results, cycles, dma_wait);
    }

    /// Ends the running job: the VM's copy gets the results, the VM its interrupt, the job log
    /// a record; then the next job starts.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        now: Instant,
        r: Running,
        outcome: Outcome,
        error: u32,
        err_bit: u32,
        results: &[(u64, u32)],
        cycles: u64,
        dma_wait: u64,
    ) {
        let done_bit = self.model.status.done;
        let error_reg = self.model.error.offset;
        let v = &mut self.vms[r.vm];
        let alive = v.epoch == r.ctx.epoch;
        let outcome = if alive { outcome } else { Outcome::Cancelled };
        if alive {
            for &(o, val) in results {
                v.regs.insert(o, val);
            }
            v.regs.insert(error_reg, error);
            v.status_bits = done_bit | err_bit;
            v.jobs_finished = v.jobs_finished.wrapping_add(1);
            v.job = None;
            if r.ctx.irq && v.session.as_mut().is_some_and(|s| s.send(Message::Msix(Msix { vector: r.ctx.vector }))) {
                v.stats.interrupts += 1;
            }
        }
        // From the logged times, so queued_us == started_us - submitted_us exactly.
        let queued = us(self.epoch0, r.started) - us(self.epoch0, r.ctx.submitted);
        let rec = JobRecord {
            seq: r.seq,
            vm: v.cfg.name.clone(),
            pool: v.cfg.pool.clone(),
            priority: r.priority,
            outcome,
            submitted_us: us(self.epoch0, r.ctx.submitted),
            started_us: Some(us(self.epoch0, r.started)),
            finished_us: us(self.epoch0, now),
            queued_us: queued,
            cycles,
            dma_wait,
            error,
        };
        match outcome {
            Outcome::Done => v.stats.done += 1,
            Outcome::Failed => v.stats.failed += 1,
            Outcome::Cancelled => v.stats.cancelled += 1,
        }
        v.stats.cycles += cycles;
        v.stats.queued_us_total += queued;
        v.stats.queued_us_max = v.stats.queued_us_max.max(queued);
        tracing::debug!(target: LOG_TARGET, "job {} of {} ({}) {:?}: {} cycles, queued {} us", r.seq, v.cfg.name, r.priority, outcome, cycles, queued);
        self.records.push_back(rec);
        self.drain_vm(r.vm, now);
        self.try_start(now);
    }

    /// The running job is lost: its VM sees it fail with the model's `lost_code`.
    fn fail_running(&mut self, now: Instant, why: &str) {
        if let Some(r) = self.running.take() {
            self.fail(now, r, why);
        }
    }

    /// The job whose results are being read is lost.
    fn fail_collecting(&mut self, now: Instant, why: &str) {
        if let Some(r) = self.collecting.take() {
            self.fail(now, r, why);
        }
    }

    fn fail(&mut self, now: Instant, r: Running, why: &str) {
        tracing::error!(target: LOG_TARGET, "job {} of {} failed: {why}", r.seq, self.vms[r.vm].cfg.name);
        let lost = self.model.error.lost_code;
        let err_bit = self.model.status.error;
        self.finish(now, r, Outcome::Failed, lost, err_bit, &[], 0, 0);
    }

    fn job_timed_out(&mut self, now: Instant) {
        self.stats.job_timeouts += 1;
        tracing::error!(target: LOG_TARGET, "job ran longer than {:?}: resetting the RTL", self.job_timeout);
        let why = format!("no completion within {:?}", self.job_timeout);
        self.reset_rtl(now, &why);
    }

    fn try_start(&mut self, now: Instant) {
        if self.running.is_some()
            || (self.collecting.is_some() && !self.pipelined)
            || self.fence.is_some()
            || !self.sim.is_up()
        {
            return;
        }
        while let Some(q) = self.sched.pop() {
            if self.vms[q.vm].epoch != q.job.epoch {
                continue; // cancelled with its VM (already recorded)
            }
            let d = &self.model.doorbell;
            let mut writes = Vec::with_capacity(q.job.context.len() + 2);
            if d.clear != 0 {
                writes.push((d.offset, d.clear));
            }
            writes.extend(q.job.context.iter().copied());
            writes.push((d.offset, d.start | d.irq_enable));
            for (offset, data) in writes {
                self.sim.send(Message::MmioWrite(MmioWrite {
                    bar: self.bar,
                    size: AccessSize::B4,
                    offset,
                    data: u64::from(data),
                }));
            }
            self.running = Some(Running {
                seq: q.seq,
                vm: q.vm,
                priority: q.priority,
                ctx: q.job,
                started: now,
                phase: Phase::Running,
                reads: HashMap::new(),
                values: BTreeMap::new(),
            });
            self.drain_sim(now);
            return;
        }
    }

    // ---------------------------------------------------------------------------------------
    // The VM side
    // ---------------------------------------------------------------------------------------

    fn drain_vm(&mut self, i: usize, now: Instant) {
        loop {
            let Some(ev) = self.vms[i].session.as_mut().and_then(DeviceSession::poll_event) else {
                return;
            };
            match ev {
                DeviceEvent::Send(m) => self.out.push_back((Peer::Vm(i), m)),
                DeviceEvent::SessionStarted { session, .. } => {
                    tracing::info!(target: LOG_TARGET, "{}: QEMU connected (session {session:#x})", self.vms[i].cfg.name);
                    self.vms[i].stats.sessions += 1;
                    self.vm_gone(i, now);
                }
                DeviceEvent::Deliver(m) => self.on_vm_message(i, now, m),
                DeviceEvent::HostLost => {
                    tracing::warn!(target: LOG_TARGET, "{}: QEMU lost (silent for {} ms); its job is cancelled", self.vms[i].cfg.name,
                        self.timing.liveness_timeout.as_millis());
                    self.vm_stalled(i, now);
                }
                DeviceEvent::HostBack => {}
                DeviceEvent::SessionEnded(reason) => {
                    tracing::info!(target: LOG_TARGET, "{}: QEMU left ({reason:?})", self.vms[i].cfg.name);
                    self.vm_gone(i, now);
                }
            }
        }
    }

    /// Logs a job that ends without a result: cancelled while queued (`started` none), or still on
    /// the RTL when the mediator stopped.
    fn record_cancelled(
        &mut self,
        vm: usize,
        seq: u64,
        priority: Priority,
        submitted: Instant,
        started: Option<Instant>,
        now: Instant,
    ) {
        let v = &mut self.vms[vm];
        v.stats.cancelled += 1;
        let submitted_us = us(self.epoch0, submitted);
        let finished_us = us(self.epoch0, now).max(submitted_us);
        let started_us = started.map(|t| us(self.epoch0, t));
        self.records.push_back(JobRecord {
            seq,
            vm: v.cfg.name.clone(),
            pool: v.cfg.pool.clone(),
            priority,
            outcome: Outcome::Cancelled,
            submitted_us,
            started_us,
            finished_us,
            queued_us: started_us.unwrap_or(finished_us) - submitted_us,
            cycles: 0,
            dma_wait: 0,
            error: 0,
        });
    }

    /// VM `i`'s context ends (reset, left, new session): its job ends (see [`Self::end_vm_job`])
    /// and its registers return to their reset values.
    fn vm_gone(&mut self, i: usize, now: Instant) {
        self.end_vm_job(i, now);
        let v = &mut self.vms[i];
        v.regs.clear();
        v.status_bits = 0;
        v.jobs_finished = 0;
    }

    /// VM `i`'s QEMU was silent for the liveness timeout (stopped, stuck, gone): its job ends,
    /// and if the QEMU comes back it finds the job failed with `lost_code` and its interrupt
    /// (queued for it now), as a device that lost the job would show it.
    fn vm_stalled(&mut self, i: usize, now: Instant) {
        let Some((vector, irq)) = self.end_vm_job(i, now) else { return };
        let (done, error, lost) = (self.model.status.done, self.model.status.error, self.model.error.lost_code);
        let err_reg = self.model.error.offset;
        let v = &mut self.vms[i];
        v.status_bits = done | error;
        v.regs.insert(err_reg, lost);
        if irq && v.session.as_mut().is_some_and(|s| s.send(Message::Msix(Msix { vector }))) {
            v.stats.interrupts += 1;
        }
        self.drain_vm(i, now);
    }

    /// Ends VM `i`'s job, if it has one: a queued job is cancelled, a running one completes into
    /// nothing (the epoch changes, so its later DMA and interrupt reach no one, and the DMA reads
    /// the RTL waits for from this VM fail now, so it ends soon). Reads of the RTL in flight for
    /// the VM are answered with all ones. Returns the ended job's (vector, interrupt wanted).
    fn end_vm_job(&mut self, i: usize, now: Instant) -> Option<(u16, bool)> {
        let mut ended = None;
        for r in self.running.iter().chain(self.collecting.iter()) {
            if r.vm == i && r.ctx.epoch == self.vms[i].epoch {
                ended = Some((r.ctx.vector, r.ctx.irq));
            }
        }
        let v = &mut self.vms[i];
        v.epoch += 1;
        v.job = None;
        for q in self.sched.cancel_vm(i) {
            ended = Some((q.job.vector, q.job.irq));
            tracing::info!(target: LOG_TARGET, "{}: queued job {} cancelled", self.vms[i].cfg.name, q.seq);
            self.record_cancelled(i, q.seq, q.priority, q.job.submitted, None, now);
        }
        let mut failed = Vec::new();
        self.dma_owner.retain(|tag, (vm, _)| {
            let mine = *vm == i;
            if mine {
                failed.push(*tag);
            }
            !mine
        });
        for tag in failed {
            self.sim.send(Message::DmaReadResp(DmaReadResp { tag, status: Status::CompleterAbort, data: Vec::new() }));
        }
        let mut answered = Vec::new();
        self.pass_reads.retain(|_, p| {
            let mine = p.vm == i;
            if mine {
                answered.push((p.tag, p.size));
            }
            !mine
        });
        if let Some(s) = self.vms[i].session.as_mut() {
            for (tag, size) in answered {
                // Not outstanding any more after a new session: then the session refuses it.
                s.send(Message::MmioReadResp(MmioReadResp { tag, status: Status::CompleterAbort, data: size.mask() }));
            }
        }
        self.drain_sim(now);
        self.drain_vm(i, now);
        ended
    }

    fn on_vm_message(&mut self, i: usize, now: Instant, m: Message) {
        match m {
            Message::MmioRead(r) => self.vm_read(i, now, r),
            Message::MmioWrite(w) => self.vm_write(i, now, w),
            Message::DmaReadResp(r) => {
                let owner = self.dma_owner.get(&r.tag).copied();
                if owner == Some((i, self.vms[i].epoch)) {
                    self.dma_owner.remove(&r.tag);
                    self.sim.send(Message::DmaReadResp(r));
                    self.drain_sim(now);
                } else {
                    tracing::debug!(target: LOG_TARGET, "{}: DMA completion {} for no live job dropped", self.vms[i].cfg.name, r.tag);
                }
            }
            Message::Reset => {
                tracing::info!(target: LOG_TARGET, "{}: device reset by its guest", self.vms[i].cfg.name);
                self.vm_gone(i, now);
            }
            Message::NicFrame(_) | Message::Serial(_) => self.stats.nic_serial_dropped += 1,
            other => {
                tracing::warn!(target: LOG_TARGET, "{}: unexpected {:?} dropped", self.vms[i].cfg.name, other.opcode())
            }
        }
    }

    /// True if the access lies inside the registers' BAR.
    fn inside(&self, offset: u64, size: AccessSize) -> bool {
        offset.checked_add(size.bytes() as u64).is_some_and(|end| end <= self.model.bar_size)
    }

    fn class(&self, reg: u64) -> Option<RegClass> {
        self.classes.get(&reg).copied()
    }

    /// What VM `i` reads in a register it does not share with the RTL.
    fn local_value(&self, i: usize, reg: u64) -> u32 {
        let v = &self.vms[i];
        match self.class(reg) {
            Some(RegClass::Status) => v.status_bits | if v.job.is_some() { self.model.status.busy } else { 0 },
            Some(RegClass::JobsCounter) => v.jobs_finished,
            Some(RegClass::Error | RegClass::Context | RegClass::Result | RegClass::Local | RegClass::Priority) => {
                v.regs.get(&reg).copied().unwrap_or(0)
            }
            Some(RegClass::Constant) => self.constants.get(&reg).copied().unwrap_or(0),
            Some(RegClass::Doorbell | RegClass::PassRead | RegClass::PassWrite) | None => 0,
        }
    }

    /// True if a read of `reg` must go to the RTL: pass-through registers, and constants not
    /// read yet.
    fn read_from_rtl(&self, reg: u64) -> bool {
        match self.class(reg) {
            Some(RegClass::Constant) => !self.constants.contains_key(&reg),
            Some(c) => c.reads_rtl(),
            None => false,
        }
    }

    /// The bytes of an access: from `rtl` for registers read from the RTL, else VM `i`'s copy.
    fn overlay(&self, i: usize, offset: u64, size: AccessSize, rtl: u64) -> u64 {
        let mut out = 0u64;
        for b in 0..size.bytes() as u64 {
            let addr = offset + b;
            let reg = addr & !(REG_BYTES - 1);
            let byte = if self.read_from_rtl(reg) {
                (rtl >> (8 * b)) & 0xff
            } else {
                u64::from(self.local_value(i, reg) >> (8 * (addr - reg))) & 0xff
            };
            out |= byte << (8 * b);
        }
        out
    }

    fn vm_read(&mut self, i: usize, now: Instant, r: MmioRead) {
        let reply = |m: &mut Self, status, data| {
            if let Some(s) = m.vms[i].session.as_mut() {
                s.send(Message::MmioReadResp(MmioReadResp { tag: r.tag, status, data }));
            }
        };
        if r.bar != self.bar || !self.inside(r.offset, r.size) {
            self.stats.other_bar_accesses += 1;
            reply(self, Status::UnsupportedRequest, r.size.mask());
        } else if access_regs(r.offset, r.size).any(|reg| self.read_from_rtl(reg)) {
            self.vms[i].stats.passthrough_reads += 1;
            match self.sim.mmio_read(r.bar, r.offset, r.size) {
                Some(tag) => {
                    let epoch = self.vms[i].epoch;
                    self.pass_reads.insert(tag, PassRead { vm: i, epoch, tag: r.tag, offset: r.offset, size: r.size });
                    self.drain_sim(now);
                }
                None => reply(self, Status::CompleterAbort, r.size.mask()),
            }
        } else {
            self.vms[i].stats.local_reads += 1;
            let data = self.overlay(i, r.offset, r.size, 0);
            reply(self, Status::Ok, data);
        }
        self.drain_vm(i, now);
    }

    fn vm_write(&mut self, i: usize, now: Instant, w: MmioWrite) {
        if w.bar != self.bar || !self.inside(w.offset, w.size) {
            self.stats.other_bar_accesses += 1;
            return;
        }
        for reg in access_regs(w.offset, w.size) {
            // The bytes of this register the write covers, and their values in place.
            let (mut mask, mut val) = (0u32, 0u32);
            for b in 0..w.size.bytes() as u64 {
                let addr = w.offset + b;
                if addr & !(REG_BYTES - 1) == reg {
                    let sh = 8 * (addr - reg);
                    mask |= 0xff << sh;
                    val |= (((w.data >> (8 * b)) & 0xff) as u32) << sh;
                }
            }
            match self.class(reg) {
                Some(RegClass::Doorbell) => self.doorbell(i, now, val & mask),
                Some(RegClass::Context | RegClass::Local | RegClass::Priority) => {
                    let e = self.vms[i].regs.entry(reg).or_insert(0);
                    *e = (*e & !mask) | (val & mask);
                }
                Some(RegClass::PassWrite) => {
                    let (size, offset, data) = if mask == u32::MAX {
                        (AccessSize::B4, reg, u64::from(val))
                    } else {
                        // Partial: one byte write per byte, as the guest wrote them.
                        for b in 0..4 {
                            if mask >> (8 * b) & 0xff != 0 {
                                let data = u64::from((val >> (8 * b)) & 0xff);
                                self.sim.send(Message::MmioWrite(MmioWrite {
                                    bar: w.bar,
                                    size: AccessSize::B1,
                                    offset: reg + b,
                                    data,
                                }));
                            }
                        }
                        continue;
                    };
                    self.sim.send(Message::MmioWrite(MmioWrite { bar: w.bar, size, offset, data }));
                }
                // Read-only to the VM: status, error, results, counters, passthrough_read.
                _ => {}
            }
        }
        self.drain_sim(now);
        self.drain_vm(i, now);
    }

    fn doorbell(&mut self, i: usize, now: Instant, bits: u32) {
        let m = &self.model;
        let (d, s, e) = (&m.doorbell, &m.status, &m.error);
        let v = &mut self.vms[i];
        if bits & d.clear != 0 {
            v.status_bits &= !(s.done | s.error);
            v.regs.insert(e.offset, 0);
        }
        if bits & d.start == 0 {
            return;
        }
        if v.job.is_some() {
            // As the device does for a START while busy: error code, no interrupt, job unaffected.
            v.regs.insert(e.offset, e.busy_code);
            v.status_bits |= s.error;
            v.stats.refused += 1;
            return;
        }
        v.status_bits &= !(s.done | s.error);
        v.regs.insert(e.offset, 0);
        let requested =
            m.priority.as_ref().and_then(|p| Priority::from_register(v.regs.get(&p.offset).copied().unwrap_or(0)));
        let (priority, capped) = effective(requested, v.cfg.priority, v.cfg.max());
        if capped {
            v.stats.capped += 1;
        }
        let context: Vec<(u64, u32)> = m.context.iter().map(|&o| (o, v.regs.get(&o).copied().unwrap_or(0))).collect();
        let vector = m
            .interrupt
            .as_ref()
            .and_then(|x| x.vector_register)
            .map_or(0, |o| v.regs.get(&o).copied().unwrap_or(0) as u16);
        let irq = d.irq_enable == 0 || bits & d.irq_enable != 0;
        let ctx = JobCtx { epoch: v.epoch, submitted: now, context, irq, vector };
        let seq = self.sched.submit(i, priority, ctx);
        let v = &mut self.vms[i];
        v.job = Some(seq);
        v.stats.jobs += 1;
        tracing::debug!(target: LOG_TARGET, "{}: job {seq} queued at {priority}", v.cfg.name);
        self.try_start(now);
    }
}
