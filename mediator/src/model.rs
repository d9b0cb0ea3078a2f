//! The job model: what a design's registers mean to the mediator (docs/mediator.md, "Job model").
//!
//! A design ships one TOML file next to its RTL (the GEMM accelerator's is
//! `hdl/gemm_accel/job-model.toml`). It names the BAR of the registers and sorts every register
//! the guest uses into one class ([`RegClass`]): the doorbell that submits a job, the status the
//! mediator presents per VM, the job's context (kept per VM, written to the RTL just before that
//! VM's job starts), the results captured at completion, and what passes straight through.
//! Registers are 32 bits wide, little-endian, 4-byte aligned; a register the file does not name
//! reads 0 and ignores writes, as undefined offsets do on the device.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Bytes per register.
pub const REG_BYTES: u64 = 4;

/// A job model that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("cannot read job model {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown or missing keys.
    #[error("job model {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// The content is inconsistent.
    #[error("job model {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The doorbell register: a write with a `start` bit submits a job.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Doorbell {
    /// Offset in the BAR.
    pub offset: u64,
    /// Bits that submit a job.
    pub start: u32,
    /// Bit, written with `start`, that asks for the completion interrupt (0: always raised).
    #[serde(default)]
    pub irq_enable: u32,
    /// Bits that clear the VM's done and error state (0: none).
    #[serde(default)]
    pub clear: u32,
}

/// The status register the mediator presents to each VM.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusReg {
    /// Offset in the BAR.
    pub offset: u64,
    /// Set while the VM's job is queued or running.
    pub busy: u32,
    /// Set once the VM's last job finished (until the next start or clear).
    pub done: u32,
    /// Set when the last job, or a refused start, failed (0: the design has no error bit).
    #[serde(default)]
    pub error: u32,
}

/// The error-code register: captured at completion, set by the mediator for its own refusals.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorReg {
    /// Offset in the BAR.
    pub offset: u64,
    /// Code shown when a VM starts a job while its own job is queued or running.
    pub busy_code: u32,
    /// Code shown when a job was lost (simulation gone, job timeout).
    pub lost_code: u32,
}

/// The completion interrupt.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interrupt {
    /// A context register whose value is the MSI-X vector the job raises (absent: vector 0).
    #[serde(default)]
    pub vector_register: Option<u64>,
    /// The design raises an interrupt only when a job ends. The mediator then starts the next
    /// job right behind the reads of the results (MMIO reaches the design one at a time, in
    /// order, so the reads see the finished job), saving a round trip per job. Without it the
    /// mediator waits for the results, and an interrupt while STATUS still says busy is not
    /// taken as the end of the job.
    #[serde(default)]
    pub completion_only: bool,
}

/// The register through which a job asks for a priority.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PriorityReg {
    /// Offset in the BAR; bits [1:0]: 0 the VM's default, 1 low, 2 medium, 3 high.
    pub offset: u64,
}

/// The design's free-running cycle counters (64-bit, at the `_LO` offsets), read to report how
/// busy the RTL was.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Cycles spent busy since reset.
    pub busy: u64,
    /// Cycles spent idle since reset.
    pub idle: u64,
}

/// Which results are the job's cycle counts (64-bit, at the `_LO` offsets of two result registers),
/// for the job log and the statistics.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Clock cycles of the job.
    #[serde(default)]
    pub cycles: Option<u64>,
    /// Cycles the job waited for DMA.
    #[serde(default)]
    pub dma_wait: Option<u64>,
}

/// A job model as written in the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JobModel {
    /// Name of the design.
    pub name: String,
    /// BAR of the registers.
    pub bar: u8,
    /// Size of that BAR in bytes.
    pub bar_size: u64,
    /// Job submission.
    pub doorbell: Doorbell,
    /// Per-VM status.
    pub status: StatusReg,
    /// Error code.
    pub error: ErrorReg,
    /// Completion interrupt.
    #[serde(default)]
    pub interrupt: Option<Interrupt>,
    /// Job priority register.
    #[serde(default)]
    pub priority: Option<PriorityReg>,
    /// Context registers, written to the RTL before the VM's job.
    pub context: Vec<u64>,
    /// Result registers, captured from the RTL at completion.
    #[serde(default)]
    pub results: Vec<u64>,
    /// Answered with the VM's own count of finished jobs.
    #[serde(default)]
    pub jobs_counter: Option<u64>,
    /// Read and written in the VM's copy only.
    #[serde(default)]
    pub local: Vec<u64>,
    /// Registers the RTL never changes (identity, configuration): read from the RTL once when
    /// the simulation comes up, then answered by the mediator; writes are ignored.
    #[serde(default)]
    pub constant: Vec<u64>,
    /// Reads go to the RTL (global counters, ...); writes are ignored.
    #[serde(default)]
    pub passthrough_read: Vec<u64>,
    /// Reads and writes go to the RTL (only registers that cannot affect another VM's job).
    #[serde(default)]
    pub passthrough_write: Vec<u64>,
    /// Free-running busy/idle counters.
    #[serde(default)]
    pub counters: Option<Counters>,
    /// Results that are cycle counts.
    #[serde(default)]
    pub report: Report,
}

/// What one register is to the mediator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegClass {
    /// Submits a job (write-only; reads 0).
    Doorbell,
    /// The VM's status, made up by the mediator.
    Status,
    /// The VM's error code.
    Error,
    /// The VM's requested priority (its copy only).
    Priority,
    /// Part of the job's context.
    Context,
    /// Captured at completion.
    Result,
    /// The VM's finished jobs.
    JobsCounter,
    /// The VM's copy only.
    Local,
    /// Read from the RTL once, then from the mediator's copy; writes ignored.
    Constant,
    /// Reads from the RTL, writes ignored.
    PassRead,
    /// Reads and writes to the RTL.
    PassWrite,
}

impl RegClass {
    /// True if a read of this register must go to the RTL.
    pub fn reads_rtl(self) -> bool {
        matches!(self, Self::PassRead | Self::PassWrite)
    }
}

impl JobModel {
    /// Reads and validates a job model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a job model; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let m: JobModel =
            toml::from_str(text).map_err(|e| ModelError::Parse { path: origin.to_string(), source: Box::new(e) })?;
        m.validate().map_err(|reason| ModelError::Invalid { path: origin.to_string(), reason })?;
        Ok(m)
    }

    /// Every named register and its class, by offset. Fails if one is named twice or is not a
    /// 4-byte aligned offset inside the BAR.
    pub fn classes(&self) -> Result<BTreeMap<u64, RegClass>, String> {
        let mut map = BTreeMap::new();
        let mut add = |off: u64, class: RegClass, what: &str| -> Result<(), String> {
            if !off.is_multiple_of(REG_BYTES) || off + REG_BYTES > self.bar_size {
                return Err(format!(
                    "{what} at {off:#x} is not a 4-byte aligned register inside the {:#x}-byte BAR",
                    self.bar_size
                ));
            }
            if let Some(prev) = map.insert(off, class) {
                return Err(format!("register {off:#x} is named twice ({prev:?} and {what})"));
            }
            Ok(())
        };
        add(self.doorbell.offset, RegClass::Doorbell, "doorbell")?;
        add(self.status.offset, RegClass::Status, "status")?;
        add(self.error.offset, RegClass::Error, "error")?;
        if let Some(p) = &self.priority {
            add(p.offset, RegClass::Priority, "priority")?;
        }
        if let Some(j) = self.jobs_counter {
            add(j, RegClass::JobsCounter, "jobs_counter")?;
        }
        for (list, class, what) in [
            (&self.context, RegClass::Context, "context"),
            (&self.results, RegClass::Result, "results"),
            (&self.local, RegClass::Local, "local"),
            (&self.constant, RegClass::Constant, "constant"),
            (&self.passthrough_read, RegClass::PassRead, "passthrough_read"),
            (&self.passthrough_write, RegClass::PassWrite, "passthrough_write"),
        ] {
            for &off in list {
                add(off, class, what)?;
            }
        }
        Ok(map)
    }

    fn validate(&self) -> Result<(), String> {
        if usize::from(self.bar) >= cosim_protocol::NUM_BARS {
            return Err(format!("bar = {} is not a BAR number (0 to 5)", self.bar));
        }
        if self.bar_size < REG_BYTES || !self.bar_size.is_power_of_two() {
            return Err(format!("bar_size = {:#x} is not a power of two of at least 4", self.bar_size));
        }
        let classes = self.classes()?;
        if self.doorbell.start == 0 {
            return Err("doorbell.start has no bit set".into());
        }
        if self.doorbell.start & (self.doorbell.irq_enable | self.doorbell.clear) != 0
            || self.doorbell.irq_enable & self.doorbell.clear != 0
        {
            return Err("doorbell.start, irq_enable and clear must be different bits".into());
        }
        let s = &self.status;
        if s.busy == 0 || s.done == 0 || s.busy & s.done != 0 || (s.busy | s.done) & s.error != 0 {
            return Err("status.busy and status.done must be set, and busy, done and error different bits".into());
        }
        if let Some(v) = self.interrupt.as_ref().and_then(|i| i.vector_register) {
            if classes.get(&v) != Some(&RegClass::Context) {
                return Err(format!("interrupt.vector_register {v:#x} must be one of the context registers"));
            }
        }
        if let Some(c) = &self.counters {
            for (off, what) in [(c.busy, "counters.busy"), (c.idle, "counters.idle")] {
                for half in [off, off + REG_BYTES] {
                    if !classes.get(&half).is_some_and(|c| c.reads_rtl()) {
                        return Err(format!("{what}: register {half:#x} must be a passthrough register (64-bit counter at its _LO offset)"));
                    }
                }
            }
        }
        for (off, what) in [(self.report.cycles, "report.cycles"), (self.report.dma_wait, "report.dma_wait")] {
            let Some(off) = off else { continue };
            for half in [off, off + REG_BYTES] {
                if classes.get(&half) != Some(&RegClass::Result) {
                    return Err(format!(
                        "{what}: register {half:#x} must be a result register (64-bit count at its _LO offset)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A job priority. Ordered: `Low < Medium < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Runs when nothing of higher priority waits.
    Low,
    /// Between.
    Medium,
    /// Runs first.
    High,
}

impl Priority {
    /// All, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Medium, Priority::Low];

    /// The priority a `JOB_PRIORITY` value asks for (bits [1:0]; 0 asks for none).
    pub fn from_register(v: u32) -> Option<Self> {
        match v & 3 {
            1 => Some(Self::Low),
            2 => Some(Self::Medium),
            3 => Some(Self::High),
            _ => None,
        }
    }

    /// Its name in configurations and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            other => Err(format!("unknown priority {other:?} (low, medium or high)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINI: &str = r#"
name = "mini"
bar = 0
bar_size = 0x100
context = [0x20, 0x24]
results = [0x30]
local = [0x40]
passthrough_read = [0x00]
jobs_counter = 0x34
[doorbell]
offset = 0x10
start = 1
irq_enable = 2
clear = 4
[status]
offset = 0x14
busy = 1
done = 2
error = 4
[error]
offset = 0x18
busy_code = 5
lost_code = 6
[interrupt]
vector_register = 0x24
[priority]
offset = 0x38
"#;

    #[test]
    fn mini_model_loads_and_classifies() {
        let m = JobModel::parse(MINI, "mini").unwrap();
        let c = m.classes().unwrap();
        assert_eq!(c[&0x10], RegClass::Doorbell);
        assert_eq!(c[&0x24], RegClass::Context);
        assert_eq!(c[&0x00], RegClass::PassRead);
        assert_eq!(c.len(), 10);
    }

    fn bad(edit: (&str, &str)) -> String {
        let text = MINI.replacen(edit.0, edit.1, 1);
        assert_ne!(text, MINI, "edit {edit:?} did not apply");
        JobModel::parse(&text, "bad").unwrap_err().to_string()
    }

    #[test]
    fn inconsistent_models_are_refused_with_a_reason() {
        assert!(bad(("results = [0x30]", "results = [0x20]")).contains("named twice"));
        assert!(bad(("local = [0x40]", "local = [0x42]")).contains("aligned"));
        assert!(bad(("local = [0x40]", "local = [0x100]")).contains("inside"));
        assert!(bad(("start = 1", "start = 0")).contains("no bit"));
        assert!(bad(("irq_enable = 2", "irq_enable = 1")).contains("different bits"));
        assert!(bad(("done = 2", "done = 1")).contains("different bits"));
        assert!(bad(("vector_register = 0x24", "vector_register = 0x30")).contains("context"));
        assert!(bad(("bar = 0", "bar = 7")).contains("BAR number"));
        assert!(bad(("bar_size = 0x100", "bar_size = 0x101")).contains("power of two"));
        assert!(bad(("name = \"mini\"", "name = \"mini\"\ncolour = 1")).contains("unknown field"));
    }

    #[test]
    fn priorities_order_and_parse() {
        assert!(Priority::High > Priority::Medium && Priority::Medium > Priority::Low);
        assert_eq!(Priority::from_register(0), None);
        assert_eq!(Priority::from_register(3), Some(Priority::High));
        assert_eq!(Priority::from_register(0x7), Some(Priority::High));
        assert_eq!("medium".parse::<Priority>(), Ok(Priority::Medium));
        assert!("urgent".parse::<Priority>().is_err());
    }
}
