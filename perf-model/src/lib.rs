//! Analytic performance models of the cosim GEMM engine (`hdl/gemm_accel/gemm_engine.sv`,
//! docs/register-map.md "Engine"): how many clock cycles (the CYCLES register, START to the
//! interrupt request) a job C = A x B of M x N x K takes on a given configuration. One
//! implementation, used by `accel-tool serve` for the predictions in every reply (the host's
//! Python package only shows them).
//!
//! Three models, from coarse to close:
//! - [`roofline`]: the larger of the compute bound (M*N*K multiply-accumulates on ROWS x COLS
//!   units) and the memory bound (the compulsory bytes, A and B read once and C written once, at
//!   the DMA's bytes per cycle). No latency, no tiling.
//! - [`systolic`]: a textbook output-stationary systolic array (as in SCALE-Sim): C is computed in
//!   folds of ROWS x COLS outputs, each taking K cycles plus ROWS + COLS - 1 to fill and drain the
//!   skewed array; the first fold's operands arrive after the read latency, and the last fold's
//!   results are written after it. On-chip buffers are assumed to hide every other transfer.
//! - [`tiled`]: the engine's own schedule, replayed tile by tile: panels of NB columns of B,
//!   blocks of AM rows of A, tiles of ROWS rows; the first A block and B panel read before any
//!   compute, later blocks and panels prefetched into the other bank during the first tile that
//!   uses the current one, each strip of C written while the next tile computes, bursts split
//!   as the DMA engines split them (8-byte beats, at most 256, never across 4 KiB), reads with
//!   the modelled latency and at most RD_OUT/2 bursts in flight per read engine, one beat per
//!   cycle on the shared read channel, plus the fixed cycles of the control state machine. It
//!   assumes packed, page-aligned buffers (what the guest driver allocates).
//!
//! Configuration: [`Engine`]; the device reports ROWS, COLS and MAX_DIM (ARRAY, MAX_DIM
//! registers), the rest defaults to `cosim_gemm_abi::defaults` (checked against the RTL there),
//! and the read latency is the simulation's `+cosim_dma_latency` (0: free-running, then the
//! models assume a host that answers at once, and the RTL's counts vary from run to run).
//!
//! Pure computation: no I/O, no allocation beyond a few small vectors, no `unsafe`.
#![forbid(unsafe_code)]

use cosim_gemm_abi::defaults;

/// The GEMM engine's configuration, everything the models need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engine {
    /// MAC array rows (ARRAY register).
    pub rows: u32,
    /// MAC array columns (ARRAY register).
    pub cols: u32,
    /// Largest M, N, K (MAX_DIM register).
    pub max_dim: u32,
    /// Columns of B held on chip.
    pub nb: u32,
    /// Rows of A held on chip.
    pub am: u32,
    /// DMA read bursts in flight, half per read engine.
    pub rd_out: u32,
    /// Clock in Hz (to turn cycles into time).
    pub clock_hz: u64,
    /// Bytes per DMA data beat (one beat per cycle at best).
    pub dma_bytes_per_cycle: u32,
    /// Modelled DMA read latency in cycles, AR to first data beat (0: free-running).
    pub read_latency_cycles: u32,
}

impl Default for Engine {
    /// The RTL's defaults (`gemm_top`), free-running reads.
    fn default() -> Self {
        Engine {
            rows: defaults::ROWS,
            cols: defaults::COLS,
            max_dim: defaults::MAX_DIM,
            nb: defaults::NB,
            am: defaults::AM,
            rd_out: defaults::RD_OUT,
            clock_hz: defaults::CLOCK_HZ,
            dma_bytes_per_cycle: defaults::DMA_BYTES_PER_CYCLE,
            read_latency_cycles: 0,
        }
    }
}

impl Engine {
    /// A device as it reports itself (ARRAY rows and columns, MAX_DIM), the other parameters at
    /// their defaults, with the simulation's modelled read latency.
    pub fn reported(rows: u32, cols: u32, max_dim: u32, read_latency_cycles: u32) -> Engine {
        Engine {
            rows,
            cols,
            max_dim,
            read_latency_cycles,
            ..Engine::default()
        }
    }

    /// Multiply-accumulate units.
    pub fn macs(&self) -> u64 {
        u64::from(self.rows.max(1)) * u64::from(self.cols.max(1))
    }

    /// `cycles` in nanoseconds at this clock.
    pub fn cycles_to_ns(&self, cycles: u64) -> u64 {
        (cycles as u128 * 1_000_000_000 / u128::from(self.clock_hz.max(1))) as u64
    }
}

/// One job: C (m x n) = A (m x k) x B (k x n).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gemm {
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

impl Gemm {
    pub fn new(m: u32, n: u32, k: u32) -> Gemm {
        Gemm { m, n, k }
    }

    /// Multiply-accumulates.
    pub fn macs(&self) -> u64 {
        u64::from(self.m) * u64::from(self.n) * u64::from(self.k)
    }
}

/// The three models' predicted cycles for one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub roofline: u64,
    pub tiled: u64,
    pub systolic: u64,
}

/// A model, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    Roofline,
    Tiled,
    Systolic,
}

impl Model {
    /// Every model, in the order of the protocol's reply fields.
    pub const ALL: [Model; 3] = [Model::Roofline, Model::Tiled, Model::Systolic];

    pub fn name(self) -> &'static str {
        match self {
            Model::Roofline => "roofline",
            Model::Tiled => "tiled",
            Model::Systolic => "systolic",
        }
    }

    /// Predicted cycles of `job` on `engine`.
    pub fn predict(self, engine: &Engine, job: Gemm) -> u64 {
        match self {
            Model::Roofline => roofline(engine, job),
            Model::Tiled => tiled(engine, job),
            Model::Systolic => systolic(engine, job),
        }
    }
}

impl Prediction {
    /// The prediction of `model`.
    pub fn get(&self, model: Model) -> u64 {
        match model {
            Model::Roofline => self.roofline,
            Model::Tiled => self.tiled,
            Model::Systolic => self.systolic,
        }
    }
}

/// All three models for one job. A job with a zero dimension predicts 0 (the device refuses it).
pub fn predict(engine: &Engine, job: Gemm) -> Prediction {
    Prediction {
        roofline: roofline(engine, job),
        tiled: tiled(engine, job),
        systolic: systolic(engine, job),
    }
}

/// Relative error of a prediction against a measurement, in percent (positive: over-predicted).
pub fn error_percent(predicted: u64, measured: u64) -> f64 {
    if measured == 0 {
        return 0.0;
    }
    (predicted as f64 - measured as f64) * 100.0 / measured as f64
}

fn zero(job: Gemm) -> bool {
    job.m == 0 || job.n == 0 || job.k == 0
}

/// Roofline: max(M*N*K / MACs, (M*K + K*N + 4*M*N) / bytes per cycle).
pub fn roofline(e: &Engine, job: Gemm) -> u64 {
    if zero(job) {
        return 0;
    }
    let (m, n, k) = (u64::from(job.m), u64::from(job.n), u64::from(job.k));
    let compute = job.macs().div_ceil(e.macs());
    let bytes = m * k + k * n + 4 * m * n;
    let memory = bytes.div_ceil(u64::from(e.dma_bytes_per_cycle.max(1)));
    compute.max(memory)
}

/// Output-stationary systolic array: the first fold's operands after the read latency, then
/// ceil(M/ROWS) * ceil(N/COLS) folds of K + ROWS + COLS - 1 cycles, then the last fold's results.
pub fn systolic(e: &Engine, job: Gemm) -> u64 {
    if zero(job) {
        return 0;
    }
    let (m, n, k) = (u64::from(job.m), u64::from(job.n), u64::from(job.k));
    let (r, c) = (u64::from(e.rows.max(1)), u64::from(e.cols.max(1)));
    let bpc = u64::from(e.dma_bytes_per_cycle.max(1));
    let folds = m.div_ceil(r) * n.div_ceil(c);
    let fold = k + r + c - 1;
    let first_in = (r.min(m) * k + k * c.min(n)).div_ceil(bpc);
    let last_out = (r.min(m) * c.min(n) * 4).div_ceil(bpc);
    u64::from(e.read_latency_cycles) + first_in + folds * fold + last_out
}

/// Fixed cycles of the engine's control (gemm_engine.sv, gemm_dma_rd.sv, gemm_dma_wr.sv),
/// counted from the first cycle of CHECK (CYCLES counts CHECK through IRQ).
mod timing {
    /// CHECK, then FIRST: the first loads start in FIRST.
    pub const LOAD_START: u64 = 1;
    /// From a read engine's start to its first AR handshake (start latched, burst set up, ARVALID).
    pub const FIRST_AR: u64 = 2;
    /// Between two ARs of one engine (ARVALID falls after the handshake, the next burst is set up).
    pub const AR_GAP: u64 = 2;
    /// From a burst's last beat to its slot being free for the next burst.
    pub const SLOT_FREE: u64 = 1;
    /// From an engine's last beat to the control seeing its DONE.
    pub const READ_DONE: u64 = 2;
    /// S_DRAIN: the two pipeline stages after the last issue, and the cycle that sees them empty.
    pub const DRAIN: u64 = 3;
    /// Write engine: IDLE to the first AW.
    pub const WRITE_START: u64 = 1;
    /// Write engine: per burst, the AW cycle.
    pub const WRITE_BURST: u64 = 1;
    /// Write engine: from the last W beat to DONE (the B responses, RESP state).
    pub const WRITE_RESP: u64 = 3;
    /// FLUSH and IRQ after the last write is done.
    pub const END: u64 = 2;
}

/// Operand buffers are page-aligned; bursts never cross a page.
const PAGE: u64 = 4096;

/// Beats of each burst the DMA engines split `bytes` bytes at `addr` into (8-byte beats, at
/// most 256, never across 4 KiB; gemm_dma_rd.sv and gemm_dma_wr.sv split alike).
fn burst_beats(e: &Engine, mut addr: u64, mut bytes: u64) -> impl Iterator<Item = u64> {
    let bpc = u64::from(e.dma_bytes_per_cycle.max(1));
    let max_burst = 256 * bpc;
    std::iter::from_fn(move || {
        if bytes == 0 {
            return None;
        }
        let to_4k = PAGE - addr % PAGE;
        let to_max = max_burst - addr % bpc;
        let nbytes = bytes.min(to_4k).min(to_max);
        let beats = (addr % bpc + nbytes).div_ceil(bpc);
        addr += nbytes;
        bytes -= nbytes;
        Some(beats)
    })
}

/// Beats of the read bursts that fetch `nrows` rows of `row_bytes` bytes at `stride` from `addr`,
/// as gemm_dma_rd.sv splits them (rows back to back in memory are one segment).
fn read_bursts(e: &Engine, addr: u64, stride: u64, row_bytes: u64, nrows: u64, out: &mut Vec<u32>) {
    let (segments, seg_bytes) = if stride == row_bytes {
        (1, row_bytes * nrows)
    } else {
        (nrows, row_bytes)
    };
    for s in 0..segments {
        out.extend(burst_beats(e, addr + s * stride, seg_bytes).map(|b| b as u32));
    }
}

/// Cycles the write engine is busy for a strip of `nrows` x `ncols` int32 at `addr` (row
/// stride `stride` bytes), as gemm_dma_wr.sv writes it: row by row, an AW cycle and the beats
/// of each burst, then the responses.
fn write_cycles(e: &Engine, addr: u64, stride: u64, nrows: u64, ncols: u64) -> u64 {
    let bursts: u64 = (0..nrows)
        .flat_map(|r| burst_beats(e, addr + r * stride, ncols * 4))
        .map(|beats| timing::WRITE_BURST + beats)
        .sum();
    timing::WRITE_START + bursts + timing::WRITE_RESP
}

/// Loads started together at cycle `start` (each a list of burst lengths in beats), sharing the
/// read address and data channels: returns the cycle each load's DONE is seen.
fn run_loads(e: &Engine, start: u64, loads: &[&[u32]]) -> Vec<u64> {
    let lat = u64::from(e.read_latency_cycles);
    let nout = (e.rd_out / 2).max(1) as usize;
    struct Rd<'a> {
        bursts: &'a [u32],
        next: usize,
        next_ar: u64,
        slots: Vec<u64>,
        last_beat: u64,
    }
    let mut rds: Vec<Rd> = loads
        .iter()
        .map(|b| Rd {
            bursts: b,
            next: 0,
            next_ar: start + timing::FIRST_AR,
            slots: vec![0; nout],
            last_beat: start,
        })
        .collect();
    let mut r_free = 0u64; // first cycle the read data channel is free
    let mut last_ar: Option<u64> = None; // the shared AR channel takes one request per cycle
    let mut last_sel = usize::MAX;
    loop {
        // The engine that can present its next burst first (ties: alternate, as gemm_rd_mux).
        let mut best: Option<(u64, usize)> = None;
        for (i, rd) in rds.iter().enumerate() {
            if rd.next >= rd.bursts.len() {
                continue;
            }
            let slot = *rd.slots.iter().min().unwrap_or(&0);
            let cand = rd.next_ar.max(slot);
            let better = match best {
                None => true,
                Some((t, j)) => cand < t || (cand == t && j == last_sel),
            };
            if better {
                best = Some((cand, i));
            }
        }
        let Some((cand, i)) = best else { break };
        let ar = match last_ar {
            Some(l) => cand.max(l + 1),
            None => cand,
        };
        last_ar = Some(ar);
        last_sel = i;
        let rd = &mut rds[i];
        let beats = u64::from(rd.bursts[rd.next]);
        let first = (ar + lat).max(r_free);
        r_free = first + beats;
        let slot = rd.slots.iter_mut().min().expect("at least one slot");
        *slot = r_free + timing::SLOT_FREE;
        rd.last_beat = r_free;
        rd.next_ar = ar + timing::AR_GAP;
        rd.next += 1;
    }
    rds.iter()
        .map(|rd| rd.last_beat + timing::READ_DONE)
        .collect()
}

/// The engine's schedule replayed tile by tile (see the crate doc).
pub fn tiled(e: &Engine, job: Gemm) -> u64 {
    if zero(job) {
        return 0;
    }
    let (m, n, k) = (u64::from(job.m), u64::from(job.n), u64::from(job.k));
    let (rows, cols) = (u64::from(e.rows.max(1)), u64::from(e.cols.max(1)));
    let nb = u64::from(e.nb.max(1));
    let am = u64::from(e.am.max(1));
    // Packed operands in page-aligned buffers.
    let (a0, b0, c0) = (0u64, 0u64, 0u64);
    let a_block =
        |blk: u64, out: &mut Vec<u32>| read_bursts(e, a0 + blk * k, k, k, am.min(m - blk), out);
    let b_panel = |jb: u64, out: &mut Vec<u32>| read_bursts(e, b0 + jb, n, nb.min(n - jb), k, out);

    let mut a_next = Vec::new();
    let mut b_next = Vec::new();
    a_block(0, &mut a_next);
    b_panel(0, &mut b_next);
    let done = run_loads(e, timing::LOAD_START, &[&a_next, &b_next]);
    let (mut a_done, mut b_done) = (done[0], done[1]);
    let mut reads_idle = a_done.max(b_done);

    let a_resident = m <= am;
    let mut t = timing::LOAD_START + 1; // first cycle of S_NEXT
    let mut wr_free = 0u64; // first cycle the write engine is idle
    let mut first = true;
    for jb in (0..n).step_by(nb as usize) {
        let nbp = nb.min(n - jb);
        let chunks = nbp.div_ceil(cols);
        let more_panels = jb + nb < n;
        for blk in (0..m).step_by(am as usize) {
            let more_blocks = blk + am < m;
            let new_block = first || (blk == 0 && !a_resident) || blk > 0;
            for ib in (blk..m.min(blk + am)).step_by(rows as usize) {
                let new_panel = ib == 0;
                // S_NEXT: wait for the operands of this tile if it starts a block or a panel.
                let mut ready = t;
                if ib == blk && new_block {
                    ready = ready.max(a_done);
                }
                if new_panel {
                    ready = ready.max(b_done);
                }
                let comp = ready + 1;
                first = false;
                // Prefetches start on the tile's first compute cycle.
                let a_pf = ib == blk && (more_blocks || (more_panels && !a_resident));
                let b_pf = ib == 0 && more_panels;
                if a_pf || b_pf {
                    a_next.clear();
                    b_next.clear();
                    if a_pf {
                        a_block(if more_blocks { blk + am } else { 0 }, &mut a_next);
                    }
                    if b_pf {
                        b_panel(jb + nb, &mut b_next);
                    }
                    let done = run_loads(e, comp, &[&a_next, &b_next]);
                    if a_pf {
                        a_done = done[0];
                        reads_idle = reads_idle.max(a_done);
                    }
                    if b_pf {
                        b_done = done[1];
                        reads_idle = reads_idle.max(b_done);
                    }
                }
                // S_COMP, S_DRAIN, then S_WRITE_C until the write engine is free.
                let write_c = (comp + chunks * k + timing::DRAIN).max(wr_free);
                let mr = rows.min(m - ib);
                let addr = c0 + (ib * n + jb) * 4;
                wr_free = write_c + 1 + write_cycles(e, addr, n * 4, mr, nbp);
                t = write_c + 1;
            }
        }
    }
    // S_FLUSH until the write and read engines are idle, then S_IRQ.
    t.max(wr_free).max(reads_idle) + timing::END
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at100() -> Engine {
        Engine {
            read_latency_cycles: 100,
            ..Engine::default()
        }
    }

    #[test]
    fn defaults_are_the_rtl_defaults() {
        let e = Engine::default();
        assert_eq!((e.rows, e.cols, e.nb, e.am, e.rd_out), (4, 4, 64, 32, 32));
        assert_eq!(e.macs(), 16);
        assert_eq!(e.cycles_to_ns(100), 1000);
        let r = Engine::reported(8, 8, 512, 100);
        assert_eq!(
            (r.rows, r.cols, r.max_dim, r.read_latency_cycles, r.nb),
            (8, 8, 512, 100, 64)
        );
    }

    #[test]
    fn zero_dimension_predicts_nothing() {
        assert_eq!(
            predict(&at100(), Gemm::new(0, 4, 4)),
            Prediction {
                roofline: 0,
                tiled: 0,
                systolic: 0
            }
        );
    }

    #[test]
    fn roofline_by_hand() {
        let e = at100();
        // 64^3: compute 16384; bytes 4096 + 4096 + 16384 = 24576 / 8 = 3072.
        assert_eq!(roofline(&e, Gemm::new(64, 64, 64)), 16384);
        // 64 x 64 x 1: compute 256; bytes 64 + 64 + 16384 = 16512 / 8 = 2064.
        assert_eq!(roofline(&e, Gemm::new(64, 64, 1)), 2064);
    }

    #[test]
    fn systolic_by_hand() {
        let e = at100();
        // 4 x 4 x 4: 100 + (16 + 16) / 8 + 1 * (4 + 4 + 4 - 1) + 64 / 8 = 100 + 4 + 11 + 8.
        assert_eq!(systolic(&e, Gemm::new(4, 4, 4)), 123);
    }

    #[test]
    fn read_bursts_split_like_the_dma_engine() {
        let e = Engine::default();
        let mut v = Vec::new();
        // 4096 contiguous bytes from a page boundary: two bursts of 256 beats.
        read_bursts(&e, 0, 64, 64, 64, &mut v);
        assert_eq!(v, vec![256, 256]);
        v.clear();
        // A 64-byte panel of a 100-byte-wide B: one 8-beat burst per row, 9 when it starts off an 8-byte boundary (row 1 at 100).
        read_bursts(&e, 0, 100, 64, 3, &mut v);
        assert_eq!(v, vec![8, 9, 8]);
    }

    #[test]
    fn write_cycles_count_bursts_and_beats() {
        let e = Engine::default();
        // 4 rows of 4 int32 (16 bytes, 2 beats) at stride 16: start, 4 x (AW + 2), response.
        assert_eq!(
            write_cycles(&e, 0, 16, 4, 4),
            timing::WRITE_START + 4 * 3 + timing::WRITE_RESP
        );
    }

    #[test]
    fn reads_share_one_data_channel() {
        let e = at100();
        let a = [2u32];
        let b = [2u32];
        let d = run_loads(&e, 0, &[&a, &b]);
        // A's AR at 2, B's at 3 (one AR per cycle); A's beats 102-103, B's 104-105.
        assert_eq!(d, vec![104 + timing::READ_DONE, 106 + timing::READ_DONE]);
    }

    /// The models' order on large square jobs: the tiled model tracks the engine's compute
    /// (M*N*K/16 plus the first load and the last write), the roofline is below it.
    #[test]
    fn tiled_is_above_the_compute_bound_and_close_to_it_for_large_jobs() {
        let e = at100();
        for s in [64u32, 128, 256, 512] {
            let j = Gemm::new(s, s, s);
            let p = predict(&e, j);
            let ideal = j.macs() / 16;
            assert!(p.tiled > ideal, "{s}: tiled {} <= ideal {ideal}", p.tiled);
            assert!(
                (p.tiled as f64) < ideal as f64 * 1.08,
                "{s}: tiled {} far above {ideal}",
                p.tiled
            );
            assert_eq!(p.roofline, ideal, "{s}: compute-bound");
        }
    }
}
