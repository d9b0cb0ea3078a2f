//! `cosim-mediator`: several QEMU `accelerator-pcie` devices share one RTL simulation.
//!
//! To each QEMU the mediator is the device: it answers INIT with the simulation's CONFIG and
//! presents a whole accelerator of that VM's own. To the simulation it is the one host. Both
//! sides run the protocol's session engines (`cosim_protocol::session`). Jobs are mediated at job
//! granularity, described by the design's job model ([`model`], a TOML file next to the RTL):
//! each VM's context registers are kept per VM and written to the RTL just before its job runs;
//! the [`sched`]uler picks the next job (strict priority, first come first served within one);
//! while a job runs its DMA and interrupts reach only its VM ([`core`]). docs/mediator.md has the
//! rules, the configuration and the reports.
//!
//! Ownership: [`core::Mediator`] is sans-I/O (the caller passes the time and every frame in, and
//! sends what it returns); the binary owns the sockets, the clock, the signals and the files.
//! No `unsafe` in the library (forbidden); the binary's signal handler is its only `unsafe`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod core;
pub mod joblog;
pub mod model;
pub mod sched;

pub use config::{MediatorConfig, VmConfig};
pub use core::{JobRecord, Mediator, Outcome, Peer, Settings};
pub use model::{JobModel, Priority};
