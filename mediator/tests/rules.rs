//! The mediator's rules with simulated time and no sockets (docs/mediator.md): the test plays the
//! simulation and the VMs' QEMUs by feeding messages to `Mediator` and reading what it sends.
//! Register offsets and bits come from gemm-abi; the job model is the GEMM design's shipped file.

use std::path::Path;
use std::time::{Duration, Instant};

use cosim_gemm_abi::{ctrl, pci, regs, status, ErrorCode};
use cosim_mediator::{JobModel, JobRecord, Mediator, Outcome, Peer, Priority, Settings, VmConfig};
use cosim_protocol::session::Timing;
use cosim_protocol::{
    AccessSize, BarDesc, BarIndex, Caps, Config, DeviceConfig, DmaRead, DmaReadResp, DmaWrite, GuestAddr, Heartbeat,
    Init, Message, MmioRead, MmioReadResp, MmioWrite, Msix, MsixConfig, Status, VERSION_MAJOR, VERSION_MINOR,
};

fn model() -> JobModel {
    JobModel::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../hdl/gemm_accel/job-model.toml"))
        .expect("GEMM job model")
}

fn device() -> DeviceConfig {
    let mut d = DeviceConfig {
        vendor_id: pci::VENDOR_ID,
        device_id: pci::DEVICE_ID,
        class_code: pci::CLASS_CODE,
        revision: pci::REVISION,
        ..Default::default()
    };
    d.bars[0] = BarDesc::mem32(pci::BAR0_SIZE);
    d.bars[2] = BarDesc::mem64(pci::BAR2_SIZE, false);
    d.msix = MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 };
    d
}

const BAR0: BarIndex = match BarIndex::new(0) {
    Some(b) => b,
    None => unreachable!(),
};

/// The test's view of the world: the mediator, the time, and the session numbers in use.
struct World {
    m: Mediator,
    now: Instant,
    sim_session: u64,
    /// Messages sent so far and not yet looked at, heartbeats left out.
    sent: Vec<(Peer, Message)>,
    records: Vec<JobRecord>,
}

impl World {
    fn new(vms: &[(&str, &str, Priority, Priority)]) -> Self {
        Self::with_model(vms, model())
    }

    /// Two VMs, the simulation up and both connected, with a job model whose interrupt is not
    /// only the completion.
    fn two_vms_without_completion_only() -> Self {
        let mut model = model();
        model.interrupt.as_mut().expect("interrupt").completion_only = false;
        let mut w = Self::with_model(
            &[("vm0", "A", Priority::Low, Priority::Low), ("vm1", "A", Priority::Low, Priority::Low)],
            model,
        );
        w.sim_config();
        w.connect(0);
        w.connect(1);
        w
    }

    fn with_model(vms: &[(&str, &str, Priority, Priority)], model: JobModel) -> Self {
        let now = Instant::now();
        let vms = vms
            .iter()
            .map(|&(name, pool, priority, max)| VmConfig {
                name: name.into(),
                endpoint: format!("ipc:///nowhere/{name}"),
                pool: pool.into(),
                priority,
                max_priority: Some(max),
            })
            .collect();
        let m = Mediator::new(
            Settings {
                model,
                vms,
                sim_name: "sim".into(),
                handshake_timeout: Duration::from_secs(10),
                job_timeout: Duration::from_secs(30),
                instance: 1,
                seed: 42,
                timing: Timing::default(),
            },
            now,
        );
        let mut w = World { m, now, sim_session: 0, sent: Vec::new(), records: Vec::new() };
        w.pump();
        w
    }

    fn pump(&mut self) {
        while let Some((p, msg)) = self.m.poll_output() {
            if !matches!(msg, Message::Heartbeat(_)) {
                self.sent.push((p, msg));
            }
        }
        while let Some(r) = self.m.poll_record() {
            self.records.push(r);
        }
    }

    /// What was sent so far, left in place.
    fn take_keep(&mut self) -> Vec<(Peer, Message)> {
        self.pump();
        self.sent.clone()
    }

    fn take(&mut self) -> Vec<(Peer, Message)> {
        self.pump();
        std::mem::take(&mut self.sent)
    }

    fn sim_config(&mut self) {
        let init = self
            .take()
            .into_iter()
            .find_map(|(p, m)| match (p, m) {
                (Peer::Sim, Message::Init(i)) => Some(i),
                _ => None,
            })
            .expect("INIT to the simulation");
        self.sim_session = init.session;
        let cfg = Config {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            caps: Caps::MSIX | Caps::NIC | Caps::SERIAL,
            session: init.session,
            device: device(),
        };
        self.m.handle_sim(self.now, Ok(Message::Config(cfg)));
        assert!(self.m.sim_up());
        self.pass_fence();
    }

    /// Answers the read the mediator sends behind a RESET of the RTL (the fence: a read of
    /// STATUS, the last one sent); other messages stay in `sent`.
    fn pass_fence(&mut self) {
        let sent = self.take();
        let fence = sent
            .iter()
            .rev()
            .find_map(|(p, m)| match (p, m) {
                (Peer::Sim, Message::MmioRead(r)) if r.offset == regs::STATUS => Some(r.tag),
                _ => None,
            })
            .expect("a fence read after the RESET");
        assert!(
            sent.iter().any(|(p, m)| *p == Peer::Sim && matches!(m, Message::Reset)),
            "no RESET before the fence: {sent:?}"
        );
        self.sent = sent;
        self.m
            .handle_sim(self.now, Ok(Message::MmioReadResp(MmioReadResp { tag: fence, status: Status::Ok, data: 0 })));
    }

    fn sim(&mut self, msg: Message) {
        self.m.handle_sim(self.now, Ok(msg));
        self.pump();
    }

    fn vm(&mut self, i: usize, msg: Message) {
        self.m.handle_vm(i, self.now, Ok(msg));
        self.pump();
    }

    fn connect(&mut self, i: usize) -> Config {
        let session = 0x100 + i as u64;
        self.vm(
            i,
            Message::Init(Init {
                major: VERSION_MAJOR,
                minor: VERSION_MINOR,
                caps: Caps::MSIX,
                session,
                prev_session: 0,
            }),
        );
        self.take()
            .into_iter()
            .find_map(|(p, m)| match (p, m) {
                (Peer::Vm(j), Message::Config(c)) if j == i => Some(c),
                _ => None,
            })
            .expect("CONFIG to the VM")
    }

    fn write(&mut self, i: usize, offset: u64, data: u32) {
        self.vm(i, Message::MmioWrite(MmioWrite { bar: BAR0, size: AccessSize::B4, offset, data: u64::from(data) }));
    }

    /// A read answered by the mediator itself (fails if it went to the simulation).
    fn read_local(&mut self, i: usize, offset: u64, size: AccessSize) -> u64 {
        let tag = 77;
        self.vm(i, Message::MmioRead(MmioRead { tag, bar: BAR0, size, offset }));
        let sent = self.take();
        assert!(!sent.iter().any(|(p, _)| *p == Peer::Sim), "read of {offset:#x} went to the simulation: {sent:?}");
        match sent.as_slice() {
            [(Peer::Vm(j), Message::MmioReadResp(r))] if *j == i && r.tag == tag => r.data,
            other => panic!("expected one read completion for VM {i}, got {other:?}"),
        }
    }

    fn status(&mut self, i: usize) -> u32 {
        self.read_local(i, regs::STATUS, AccessSize::B4) as u32
    }

    /// Programs a job (distinct values per VM) and rings the doorbell.
    fn submit(&mut self, i: usize, m: u32) {
        self.write(i, regs::M, m);
        self.write(i, regs::N, 8 + i as u32);
        self.write(i, regs::K, 16);
        self.write(i, regs::MSIX_VECTOR, i as u32 % 4);
        self.write(i, regs::C_ADDR_LO, 0x10_0000 * (i as u32 + 1));
        self.write(i, regs::CTRL, ctrl::START | ctrl::IRQ_EN);
    }

    /// The writes that started a job on the RTL, as (offset, value), or none.
    fn rtl_writes(sent: &[(Peer, Message)]) -> Vec<(u64, u32)> {
        sent.iter()
            .filter_map(|(p, m)| match (p, m) {
                (Peer::Sim, Message::MmioWrite(w)) => Some((w.offset, w.data as u32)),
                _ => None,
            })
            .collect()
    }

    /// The RTL finishes the running job: interrupt, then the result reads are answered. Returns
    /// everything sent meanwhile, in order (with `completion_only`, the next job's start comes
    /// right behind the reads, before their answers).
    fn rtl_done(&mut self, vector: u16, error: u32, cycles: u64) -> Vec<(Peer, Message)> {
        self.sim(Message::Msix(Msix { vector }));
        let mut sent = self.take();
        let reads: Vec<MmioRead> = sent
            .iter()
            .filter_map(|(p, m)| match (p, m) {
                (Peer::Sim, Message::MmioRead(r)) => Some(*r),
                _ => None,
            })
            .collect();
        assert!(!reads.is_empty(), "no result reads after the completion interrupt");
        for r in reads {
            let st = status::DONE | if error != 0 { status::ERROR } else { 0 };
            let data = match r.offset {
                o if o == regs::STATUS => u64::from(st),
                o if o == regs::ERROR => u64::from(error),
                o if o == regs::CYCLES_LO => cycles & 0xffff_ffff,
                o if o == regs::CYCLES_HI => cycles >> 32,
                o if o == regs::DMA_WAIT_LO => 5,
                o if o == regs::BUSY_CYCLES_LO => 1000 + cycles,
                o if o == regs::IDLE_CYCLES_LO => 100,
                _ => 0,
            };
            self.m
                .handle_sim(self.now, Ok(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data })));
        }
        sent.extend(self.take());
        sent
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            self.m.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Keeps the simulation's session alive (its heartbeat) while time passes.
    fn sim_heartbeat(&mut self) {
        let hb = Heartbeat { instance: 9, session: self.sim_session };
        self.m.handle_sim(self.now, Ok(Message::Heartbeat(hb)));
    }

    /// Lets `d` pass in steps of `step`; in each step the simulation (if `sim`) and the VMs in
    /// `vms` send their heartbeat, everyone else stays silent.
    fn pass_time(&mut self, d: Duration, step: Duration, sim: bool, vms: &[usize]) {
        let end = self.now + d;
        while self.now < end {
            if sim {
                self.sim_heartbeat();
            }
            for &i in vms {
                self.vm_heartbeat(i);
            }
            self.advance(step);
        }
    }

    fn vm_heartbeat(&mut self, i: usize) {
        let hb = Heartbeat { instance: 0x200 + i as u64, session: 0x100 + i as u64 };
        self.m.handle_vm(i, self.now, Ok(Message::Heartbeat(hb)));
    }
}

fn world(n: usize) -> World {
    let vms: Vec<(&str, &str, Priority, Priority)> =
        ["vm0", "vm1", "vm2", "vm3"][..n].iter().map(|&name| (name, "A", Priority::Low, Priority::High)).collect();
    let mut w = World::new(&vms);
    w.sim_config();
    for i in 0..n {
        w.connect(i);
    }
    w.take();
    w
}

#[test]
fn vms_get_the_simulations_configuration_without_nic_and_uart() {
    let mut w = World::new(&[("vm0", "A", Priority::Low, Priority::Low)]);
    // Before the simulation answered, a VM's INIT is not answered.
    w.vm(
        0,
        Message::Init(Init {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            caps: Caps::MSIX,
            session: 5,
            prev_session: 0,
        }),
    );
    w.pump();
    assert!(!w.sent.iter().any(|(p, _)| *p == Peer::Vm(0)));
    w.sim_config();
    let c = w.connect(0);
    assert_eq!(c.device, device());
    assert_eq!(c.caps, Caps::MSIX, "NIC and UART are not shared");
}

#[test]
fn context_is_per_vm_and_written_to_the_rtl_just_before_its_job() {
    let mut w = world(2);
    w.submit(0, 3);
    let writes = World::rtl_writes(&w.take());
    assert_eq!(writes.first(), Some(&(regs::CTRL, ctrl::CLEAR)));
    assert_eq!(writes.last(), Some(&(regs::CTRL, ctrl::START | ctrl::IRQ_EN)));
    assert!(
        writes.contains(&(regs::M, 3))
            && writes.contains(&(regs::N, 8))
            && writes.contains(&(regs::C_ADDR_LO, 0x10_0000))
    );
    assert_eq!(writes.len(), 2 + model().context.len());

    // VM1's job waits; its registers are its own, answered without the RTL.
    w.submit(1, 7);
    assert!(World::rtl_writes(&w.take()).is_empty(), "VM1's job must wait while VM0's runs");
    assert_eq!(w.status(1), status::BUSY);
    assert_eq!(w.read_local(1, regs::M, AccessSize::B4), 7);
    assert_eq!(w.read_local(0, regs::M, AccessSize::B4), 3);

    // VM0's job ends: VM0 gets its results and its interrupt; then VM1's context and START.
    let sent = w.rtl_done(0, 0, 0x1_0000_0002);
    assert!(sent.contains(&(Peer::Vm(0), Message::Msix(Msix { vector: 0 }))));
    assert!(!sent.iter().any(|(p, m)| *p == Peer::Vm(1) && matches!(m, Message::Msix(_))));
    let writes = World::rtl_writes(&sent);
    assert!(writes.contains(&(regs::M, 7)) && writes.contains(&(regs::C_ADDR_LO, 0x20_0000)));
    assert_eq!(w.status(0), status::DONE);
    assert_eq!(w.read_local(0, regs::CYCLES_LO, AccessSize::B8), 0x1_0000_0002);
    assert_eq!(w.read_local(0, regs::JOBS_DONE, AccessSize::B4), 1);
    assert_eq!(w.read_local(1, regs::JOBS_DONE, AccessSize::B4), 0);
    assert_eq!(w.read_local(1, regs::CYCLES_LO, AccessSize::B8), 0, "VM1 never sees VM0's results");

    let sent = w.rtl_done(1, 0, 99);
    assert!(sent.contains(&(Peer::Vm(1), Message::Msix(Msix { vector: 1 }))));
    assert_eq!(
        w.records.iter().map(|r| (r.vm.as_str(), r.outcome, r.cycles)).collect::<Vec<_>>(),
        vec![("vm0", Outcome::Done, 0x1_0000_0002), ("vm1", Outcome::Done, 99)]
    );
}

#[test]
fn dma_and_interrupts_reach_only_the_vm_whose_job_runs() {
    let mut w = world(3);
    w.submit(1, 4);
    w.take();
    w.sim(Message::DmaRead(DmaRead { tag: 7, addr: GuestAddr(0x1000), len: 64 }));
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x20_0000), data: vec![0xab; 16] }));
    let sent = w.take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(p, _)| *p == Peer::Vm(1)));
    // Another VM answering that read is ignored; the owner's answer goes to the RTL.
    w.vm(0, Message::DmaReadResp(DmaReadResp { tag: 7, status: Status::Ok, data: vec![0; 64] }));
    assert!(w.take().is_empty());
    w.vm(1, Message::DmaReadResp(DmaReadResp { tag: 7, status: Status::Ok, data: vec![1; 64] }));
    let sent = w.take();
    assert!(matches!(sent.as_slice(), [(Peer::Sim, Message::DmaReadResp(r))] if r.tag == 7 && r.data == vec![1; 64]));
    w.rtl_done(1, 0, 10);
    // No job runs: DMA writes are dropped, reads refused, interrupts dropped.
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x20_0000), data: vec![1; 8] }));
    w.sim(Message::DmaRead(DmaRead { tag: 8, addr: GuestAddr(0x1000), len: 8 }));
    w.sim(Message::Msix(Msix { vector: 0 }));
    let sent = w.take();
    assert!(
        matches!(sent.as_slice(), [(Peer::Sim, Message::DmaReadResp(r))] if r.tag == 8 && r.status != Status::Ok),
        "{sent:?}"
    );
    let s = w.m.stats();
    assert_eq!((s.dma_writes_dropped, s.dma_reads_refused, s.stray_interrupts), (1, 1, 1));
    assert_eq!(w.m.vm_stats(1).1.dma_read_bytes, 64);
}

#[test]
fn strict_priority_first_come_first_served_within_one_and_caps() {
    let mut w = World::new(&[
        ("busy", "A", Priority::Low, Priority::Low),
        ("low1", "A", Priority::Low, Priority::Low),
        ("low2", "B", Priority::Low, Priority::High),
        ("med", "B", Priority::Medium, Priority::Medium),
    ]);
    w.sim_config();
    for i in 0..4 {
        w.connect(i);
    }
    w.submit(0, 1); // runs at once
    w.submit(1, 2); // low
    w.submit(2, 3); // low (default), submitted after low1
    w.write(3, regs::JOB_PRIORITY, 3); // asks for high, capped at medium
    w.submit(3, 4);
    w.take();
    let mut order = Vec::new();
    for _ in 0..4 {
        let running = w.m.queue_depth();
        assert!(running.1);
        let v = w.records.len();
        let sent = w.rtl_done(0, 0, 1);
        order.push(w.records[v].vm.clone());
        let _ = sent;
    }
    assert_eq!(order, ["busy", "med", "low1", "low2"]);
    assert_eq!(w.m.vm_stats(3).1.capped, 1);
    assert_eq!(w.records[1].priority, Priority::Medium);

    // A job may ask for a priority up to its VM's max: low2 asks for high and overtakes.
    w.submit(0, 1);
    w.submit(1, 1);
    w.write(2, regs::JOB_PRIORITY, 3);
    w.submit(2, 1);
    w.take();
    let v = w.records.len();
    w.rtl_done(0, 0, 1);
    w.rtl_done(0, 0, 1);
    w.rtl_done(0, 0, 1);
    let order: Vec<_> = w.records[v..].iter().map(|r| (r.vm.as_str(), r.priority)).collect();
    assert_eq!(order, [("busy", Priority::Low), ("low2", Priority::High), ("low1", Priority::Low)]);
}

#[test]
fn a_start_while_the_vms_own_job_waits_is_refused_in_its_context_only() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1);
    w.write(1, regs::CTRL, ctrl::START);
    w.take();
    assert_eq!(w.status(1), status::BUSY | status::ERROR);
    assert_eq!(w.read_local(1, regs::ERROR, AccessSize::B4), u64::from(ErrorCode::Busy.code()));
    assert_eq!(w.read_local(0, regs::ERROR, AccessSize::B4), 0);
    assert_eq!(w.m.vm_stats(1).1.refused, 1);
    assert_eq!(w.m.vm_stats(1).1.jobs, 1, "the refused start queued nothing");
    w.rtl_done(0, 0, 1);
    let sent = w.rtl_done(0, 0, 1);
    assert!(sent.contains(&(Peer::Vm(1), Message::Msix(Msix { vector: 1 }))));
    assert_eq!(w.status(1), status::DONE, "success clears the error, as on the device");
}

#[test]
fn a_vm_that_resets_while_queued_loses_only_its_job() {
    let mut w = world(3);
    w.submit(0, 1);
    w.submit(1, 1);
    w.submit(2, 1);
    w.vm(1, Message::Reset);
    w.take();
    assert_eq!(w.status(1), 0);
    assert_eq!(w.read_local(1, regs::M, AccessSize::B4), 0, "a reset clears the VM's registers");
    assert!(
        matches!(w.records.as_slice(), [r] if r.vm == "vm1" && r.outcome == Outcome::Cancelled && r.started_us.is_none())
    );
    w.take();
    w.rtl_done(0, 0, 1);
    let sent = w.rtl_done(2, 0, 1);
    assert!(sent.contains(&(Peer::Vm(2), Message::Msix(Msix { vector: 2 }))));
    assert!(!sent.iter().any(|(p, _)| *p == Peer::Vm(1)));
}

#[test]
fn a_vm_that_resets_while_its_job_runs_gets_nothing_of_it() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1);
    w.take();
    w.sim(Message::DmaRead(DmaRead { tag: 3, addr: GuestAddr(0x1000), len: 64 }));
    w.take();
    w.vm(0, Message::Reset);
    // The RTL's outstanding read from the gone context fails at once, so the job ends soon.
    let sent = w.take();
    assert!(sent
        .iter()
        .any(|(p, m)| *p == Peer::Sim && matches!(m, Message::DmaReadResp(r) if r.tag == 3 && r.status != Status::Ok)));
    // Late traffic of that job reaches no one: not the reset VM, not the other one.
    w.vm(0, Message::DmaReadResp(DmaReadResp { tag: 3, status: Status::Ok, data: vec![0; 64] }));
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x10_0000), data: vec![7; 64] }));
    assert!(w.take().is_empty());
    let sent = w.rtl_done(0, ErrorCode::DmaError.code(), 1);
    assert!(!sent.iter().any(|(p, m)| *p == Peer::Vm(0) && matches!(m, Message::Msix(_))));
    assert_eq!(w.records[0].outcome, Outcome::Cancelled);
    assert_eq!(w.status(0), 0);
    // VM1's job runs next, unaffected.
    assert!(World::rtl_writes(&sent).contains(&(regs::CTRL, ctrl::START | ctrl::IRQ_EN)));
    w.rtl_done(1, 0, 1);
    assert_eq!(w.status(1), status::DONE);
}

#[test]
fn a_silent_vm_is_lost_and_its_job_cancelled_others_go_on() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1);
    // VM1 stops (SIGSTOP, crash): nothing from it; the simulation and VM0 stay alive.
    w.pass_time(Duration::from_millis(1500), Duration::from_millis(100), true, &[0]);
    assert!(!w.m.vm_up(1) && w.m.vm_up(0));
    assert!(w.records.iter().any(|r| r.vm == "vm1" && r.outcome == Outcome::Cancelled));
    w.take();
    let sent = w.rtl_done(0, 0, 1);
    assert!(sent.contains(&(Peer::Vm(0), Message::Msix(Msix { vector: 0 }))));
    assert!(World::rtl_writes(&sent).is_empty(), "the lost VM's job must not start");
}

#[test]
fn the_simulation_going_away_fails_the_running_job_and_keeps_the_queue() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1);
    w.take();
    w.pass_time(Duration::from_millis(1500), Duration::from_millis(100), false, &[0, 1]);
    assert!(!w.m.sim_up());
    let sent = w.take();
    assert!(sent.contains(&(Peer::Vm(0), Message::Msix(Msix { vector: 0 }))));
    assert_eq!(w.status(0), status::DONE | status::ERROR);
    assert_eq!(w.read_local(0, regs::ERROR, AccessSize::B4), u64::from(ErrorCode::DmaError.code()));
    assert_eq!(w.status(1), status::BUSY, "VM1's job waits for the simulation");
    // A pass-through read while the simulation is away: all ones, at once.
    w.vm(1, Message::MmioRead(MmioRead { tag: 5, bar: BAR0, size: AccessSize::B4, offset: regs::ID }));
    assert!(w.take().iter().any(
        |(p, m)| *p == Peer::Vm(1) && matches!(m, Message::MmioReadResp(r) if r.tag == 5 && r.data == 0xffff_ffff)
    ));
    // The simulation restarts: heard again, a new handshake, and VM1's job starts.
    w.m.handle_sim(w.now, Ok(Message::Heartbeat(Heartbeat { instance: 10, session: 0 })));
    w.advance(Duration::from_millis(50));
    w.sim_config();
    let writes = World::rtl_writes(&w.take());
    assert!(writes.contains(&(regs::CTRL, ctrl::START | ctrl::IRQ_EN)), "{writes:?}");
}

#[test]
fn a_job_that_never_completes_is_failed_and_the_rtl_reset() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1);
    w.take();
    w.pass_time(Duration::from_secs(31), Duration::from_secs(1), true, &[0, 1]);
    assert!(World::rtl_writes(&w.take_keep()).is_empty(), "a job started before the fence read completed");
    w.pass_fence();
    let sent = w.take();
    assert!(sent.iter().any(|(p, m)| *p == Peer::Sim && matches!(m, Message::Reset)), "no reset of the RTL");
    assert!(sent.contains(&(Peer::Vm(0), Message::Msix(Msix { vector: 0 }))));
    assert_eq!(w.m.stats().job_timeouts, 1);
    assert!(
        World::rtl_writes(&sent).contains(&(regs::CTRL, ctrl::START | ctrl::IRQ_EN)),
        "VM1's job starts after the reset"
    );
}

#[test]
fn pass_through_reads_go_to_the_rtl_and_back_to_the_reader_only() {
    let mut w = world(2);
    // ID is a constant, but the simulation has not answered the mediator's reads of the
    // constants in this test: until it does, reads of ID go to the RTL.
    w.vm(1, Message::MmioRead(MmioRead { tag: 40, bar: BAR0, size: AccessSize::B8, offset: regs::ID }));
    let sent = w.take();
    let Some(tag) = sent.iter().find_map(|(p, m)| match (p, m) {
        (Peer::Sim, Message::MmioRead(r)) if r.offset == regs::ID && r.size == AccessSize::B8 => Some(r.tag),
        _ => None,
    }) else {
        panic!("ID read not forwarded: {sent:?}")
    };
    w.sim(Message::MmioReadResp(MmioReadResp { tag, status: Status::Ok, data: 0x0001_0001_4745_4d4d }));
    let sent = w.take();
    assert_eq!(
        sent,
        vec![(
            Peer::Vm(1),
            Message::MmioReadResp(MmioReadResp { tag: 40, status: Status::Ok, data: 0x0001_0001_4745_4d4d })
        )]
    );
    // SCRATCH is each VM's own; an 8-byte read of JOBS_DONE + SCRATCH stays local.
    w.write(0, regs::SCRATCH, 0x1234);
    assert_eq!(w.read_local(0, regs::JOBS_DONE, AccessSize::B8), 0x1234 << 32);
    assert_eq!(w.read_local(1, regs::SCRATCH, AccessSize::B4), 0);
    // Sub-word accesses: a byte write and a 2-byte read.
    w.vm(0, Message::MmioWrite(MmioWrite { bar: BAR0, size: AccessSize::B1, offset: regs::SCRATCH + 1, data: 0xff }));
    assert_eq!(w.read_local(0, regs::SCRATCH + 1, AccessSize::B2), 0xff);
    assert_eq!(w.read_local(0, regs::SCRATCH, AccessSize::B4), 0xff34);
    // Writes to read-only registers change nothing anywhere.
    w.write(0, regs::ID, 1);
    w.write(0, regs::CYCLES_LO, 1);
    assert!(w.take().is_empty());
    assert_eq!(w.read_local(0, regs::CYCLES_LO, AccessSize::B4), 0);
}

#[test]
fn with_completion_only_the_next_job_starts_right_behind_the_result_reads() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 2);
    w.take();
    w.sim(Message::Msix(Msix { vector: 0 }));
    // Before any read is answered: the reads of job 1, then job 2's CLEAR, context and START,
    // in this order on the one channel (the RTL takes MMIO one at a time, in order).
    let sent = w.take();
    let last_read = sent.iter().rposition(|(p, m)| *p == Peer::Sim && matches!(m, Message::MmioRead(_)));
    let first_write = sent.iter().position(|(p, m)| *p == Peer::Sim && matches!(m, Message::MmioWrite(_)));
    match (last_read, first_write) {
        (Some(r), Some(wr)) => assert!(r < wr, "a write of the next job precedes a result read: {sent:?}"),
        other => panic!("want result reads and the next job's writes, got {other:?}: {sent:?}"),
    }
    assert!(World::rtl_writes(&sent).contains(&(regs::M, 2)));
}

#[test]
fn without_completion_only_an_interrupt_while_busy_is_not_the_end_of_the_job() {
    let mut w = World::two_vms_without_completion_only();
    w.submit(0, 1);
    w.submit(1, 2);
    w.take();
    w.sim(Message::Msix(Msix { vector: 0 }));
    let sent = w.take();
    assert!(World::rtl_writes(&sent).is_empty(), "the next job must wait for the results: {sent:?}");
    for (_, m) in sent {
        if let Message::MmioRead(r) = m {
            let data = if r.offset == regs::STATUS { u64::from(status::BUSY) } else { 0 };
            w.sim(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }));
        }
    }
    assert!(w.take().is_empty() && w.records.is_empty(), "a busy RTL's interrupt ended the job");
    assert_eq!(w.status(0), status::BUSY);
    let sent = w.rtl_done(0, 0, 9);
    assert!(sent.contains(&(Peer::Vm(0), Message::Msix(Msix { vector: 0 }))));
    assert!(World::rtl_writes(&sent).contains(&(regs::M, 2)));
}

#[test]
fn constants_are_read_once_per_simulation_session_then_answered_by_the_mediator() {
    let mut w = World::new(&[("vm0", "A", Priority::Low, Priority::Low)]);
    w.sim_config();
    let sent = w.take();
    // First a reset (the mediator owns the device), then the reads of the constants.
    assert!(matches!(sent.first(), Some((Peer::Sim, Message::Reset))), "{sent:?}");
    let reads: Vec<MmioRead> = sent
        .into_iter()
        .filter_map(|(p, m)| match (p, m) {
            (Peer::Sim, Message::MmioRead(r)) => Some(r),
            _ => None,
        })
        .collect();
    let offsets: Vec<u64> = reads.iter().map(|r| r.offset).filter(|&o| o != regs::STATUS).collect();
    assert_eq!(offsets, model().constant);
    for r in reads {
        let data = if r.offset == regs::ID { u64::from(regs::ID_VALUE) } else { r.offset + 1 };
        w.sim(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }));
    }
    w.connect(0);
    w.take();
    assert_eq!(w.read_local(0, regs::ID, AccessSize::B4), u64::from(regs::ID_VALUE));
    assert_eq!(w.read_local(0, regs::VERSION, AccessSize::B4), regs::VERSION + 1);
    assert_eq!(w.read_local(0, regs::ID, AccessSize::B8), u64::from(regs::ID_VALUE) | ((regs::VERSION + 1) << 32));
    // A pass-through register still goes to the RTL.
    w.vm(0, Message::MmioRead(MmioRead { tag: 3, bar: BAR0, size: AccessSize::B4, offset: regs::BUSY_CYCLES_LO }));
    assert!(w
        .take()
        .iter()
        .any(|(p, m)| *p == Peer::Sim && matches!(m, Message::MmioRead(r) if r.offset == regs::BUSY_CYCLES_LO)));
}

/// Answers every result read in `sent` as the RTL would for a job in the given STATUS.
fn answer_reads(w: &mut World, sent: &[(Peer, Message)], st: u32) {
    for (p, m) in sent {
        if let (Peer::Sim, Message::MmioRead(r)) = (p, m) {
            let data = if r.offset == regs::STATUS { u64::from(st) } else { 0 };
            w.sim(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }));
        }
    }
}

fn time_out_the_running_job(w: &mut World, vms: usize) {
    let all: Vec<usize> = (0..vms).collect();
    w.pass_time(Duration::from_secs(31), Duration::from_secs(1), true, &all);
    assert_eq!(w.m.stats().job_timeouts, 1);
}

#[test]
fn after_a_reset_nothing_the_rtl_sent_before_it_reaches_a_vm_and_no_job_starts_until_the_fence() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 2);
    w.take();
    time_out_the_running_job(&mut w, 2);
    // Sent by the RTL for VM0's job before it took the RESET: they arrive before the fence read's
    // completion (the device-to-host channel is ordered).
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x10_0000), data: vec![0xa0; 64] }));
    w.sim(Message::DmaRead(DmaRead { tag: 5, addr: GuestAddr(0x1000), len: 64 }));
    w.sim(Message::Msix(Msix { vector: 0 }));
    let sent = w.take_keep();
    assert!(
        !sent.iter().any(|(p, m)| matches!(p, Peer::Vm(_)) && matches!(m, Message::DmaWrite(_) | Message::DmaRead(_))),
        "{sent:?}"
    );
    assert!(sent
        .iter()
        .any(|(p, m)| *p == Peer::Sim && matches!(m, Message::DmaReadResp(r) if r.tag == 5 && r.status != Status::Ok)));
    assert!(World::rtl_writes(&sent).is_empty(), "VM1's job started before the fence: {sent:?}");
    w.pass_fence();
    assert!(World::rtl_writes(&w.take()).contains(&(regs::M, 2)), "VM1's job did not start after the fence");
}

#[test]
fn a_simulation_heard_again_after_a_silence_is_reset_before_the_next_job() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 2);
    w.take();
    w.pass_time(Duration::from_millis(1500), Duration::from_millis(100), false, &[0, 1]);
    assert!(!w.m.sim_up());
    w.take();
    // The same simulation process is heard again (a link hiccup): its RTL still runs VM0's job.
    w.m.handle_sim(w.now, Ok(Message::Heartbeat(Heartbeat { instance: 9, session: w.sim_session })));
    let init = w.take().into_iter().find_map(|(p, m)| match (p, m) {
        (Peer::Sim, Message::Init(i)) => Some(i),
        _ => None,
    });
    let init = init.expect("a new INIT");
    w.sim_session = init.session;
    let cfg = Config {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
        caps: Caps::MSIX,
        session: init.session,
        device: device(),
    };
    w.sim(Message::Config(cfg));
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x10_0000), data: vec![0xa0; 64] }));
    let sent = w.take_keep();
    assert!(!sent.iter().any(|(p, m)| *p == Peer::Vm(1) && matches!(m, Message::DmaWrite(_))), "{sent:?}");
    assert!(World::rtl_writes(&sent).is_empty());
    w.pass_fence();
    assert!(World::rtl_writes(&w.take()).contains(&(regs::M, 2)));
}

#[test]
fn with_completion_only_an_interrupt_that_is_not_a_completion_resets_the_rtl_and_fails_both_jobs() {
    let mut w = world(3);
    w.submit(0, 1);
    w.submit(1, 2);
    w.submit(2, 3);
    w.take();
    w.sim(Message::Msix(Msix { vector: 0 }));
    let sent = w.take();
    // STATUS says BUSY: the design broke its promise; VM1's job may have been refused.
    answer_reads(&mut w, &sent, status::BUSY);
    let sent = w.take_keep();
    assert!(sent.iter().any(|(p, m)| *p == Peer::Sim && matches!(m, Message::Reset)), "{sent:?}");
    for vm in [0, 1] {
        assert!(sent.contains(&(Peer::Vm(vm), Message::Msix(Msix { vector: vm as u16 }))), "VM{vm} not told: {sent:?}");
    }
    w.pass_fence();
    w.take();
    assert_eq!(w.status(0), status::DONE | status::ERROR);
    assert_eq!(w.status(1), status::DONE | status::ERROR);
    assert_eq!(w.read_local(1, regs::ERROR, AccessSize::B4), u64::from(ErrorCode::DmaError.code()));
    assert_eq!(w.status(2), status::BUSY, "VM2's job runs after the reset");
}

#[test]
fn without_completion_only_the_job_keeps_its_dma_while_its_status_is_read() {
    let mut w = World::two_vms_without_completion_only();
    w.submit(0, 1);
    w.take();
    w.sim(Message::Msix(Msix { vector: 0 }));
    let reads = w.take();
    w.sim(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x10_0000), data: vec![1; 64] }));
    w.sim(Message::DmaRead(DmaRead { tag: 9, addr: GuestAddr(0x2000), len: 64 }));
    let sent = w.take();
    assert_eq!(sent.iter().filter(|(p, _)| *p == Peer::Vm(0)).count(), 2, "{sent:?}");
    answer_reads(&mut w, &reads, status::BUSY);
    assert_eq!(w.status(0), status::BUSY);
}

#[test]
fn the_busy_fraction_survives_a_restart_of_the_rtl() {
    let mut w = world(2);
    w.submit(0, 1);
    w.rtl_done(0, 0, 1_000_000);
    w.submit(0, 1);
    w.rtl_done(0, 0, 1_000_500);
    let before = w.m.rtl_counters();
    assert_eq!((before.busy_cycles, before.idle_cycles), (500, 0));
    w.pass_time(Duration::from_millis(1500), Duration::from_millis(100), false, &[0, 1]);
    w.m.handle_sim(w.now, Ok(Message::Heartbeat(Heartbeat { instance: 10, session: 0 })));
    w.advance(Duration::from_millis(50));
    w.sim_config();
    w.take();
    w.submit(1, 1);
    w.rtl_done(1, 0, 10); // the counters started again from 0
    w.submit(1, 1);
    w.rtl_done(1, 0, 30);
    let r = w.m.rtl_counters();
    assert_eq!((r.busy_cycles, r.idle_cycles), (520, 0), "{r:?}");
}

#[test]
fn accesses_beyond_the_registers_bar_are_refused_without_panic() {
    let mut w = world(1);
    w.vm(0, Message::MmioRead(MmioRead { tag: 1, bar: BAR0, size: AccessSize::B8, offset: u64::MAX - 2 }));
    w.vm(0, Message::MmioWrite(MmioWrite { bar: BAR0, size: AccessSize::B8, offset: u64::MAX - 2, data: 1 }));
    w.vm(0, Message::MmioRead(MmioRead { tag: 2, bar: BAR0, size: AccessSize::B4, offset: 0x1000 }));
    let sent = w.take();
    assert!(!sent.iter().any(|(p, _)| *p == Peer::Sim));
    let replies: Vec<_> = sent
        .iter()
        .filter_map(|(_, m)| match m {
            Message::MmioReadResp(r) => Some((r.tag, r.status)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [(1, Status::UnsupportedRequest), (2, Status::UnsupportedRequest)]);
    assert_eq!(w.m.stats().other_bar_accesses, 3);
}

#[test]
fn a_vm_back_after_a_stall_finds_its_job_failed_and_its_interrupt() {
    let mut w = world(2);
    w.submit(0, 1);
    w.submit(1, 1); // queued
    w.take();
    w.pass_time(Duration::from_millis(1200), Duration::from_millis(100), true, &[0]);
    assert!(!w.m.vm_up(1));
    let sent = w.take();
    assert!(sent.contains(&(Peer::Vm(1), Message::Msix(Msix { vector: 1 }))), "{sent:?}");
    w.vm_heartbeat(1); // back, same session
    assert!(w.m.vm_up(1));
    assert_eq!(w.status(1), status::DONE | status::ERROR);
    assert_eq!(w.read_local(1, regs::ERROR, AccessSize::B4), u64::from(ErrorCode::DmaError.code()));
    assert_eq!(w.read_local(1, regs::M, AccessSize::B4), 1, "a stall keeps the VM's registers");
}
