//! The mediator's configuration file (docs/mediator.md, "Configuration").

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::Priority;

/// Default time a job may run before the mediator resets the RTL and fails it.
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 120_000;
/// Default time the first handshake with the simulation may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 60_000;

/// One VM: a QEMU `accelerator-pcie` device that connects to `endpoint`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Name in logs and reports.
    pub name: String,
    /// The endpoint of that QEMU's device (its `endpoint=` property).
    pub endpoint: String,
    /// Its pool (reports only: pools have equal standing in the queue).
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Priority of its jobs that ask for none.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Highest priority its jobs may ask for (default: `priority`).
    #[serde(default)]
    pub max_priority: Option<Priority>,
}

fn default_pool() -> String {
    "default".into()
}

fn default_priority() -> Priority {
    Priority::Low
}

impl VmConfig {
    /// Highest priority its jobs may have.
    pub fn max(&self) -> Priority {
        self.max_priority.unwrap_or(self.priority)
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediatorConfig {
    /// The design's job model (relative to the configuration file's directory, or absolute).
    pub job_model: PathBuf,
    /// The endpoint the simulation listens on (its `--endpoint`).
    pub simulation: String,
    /// A job running longer than this is failed and the RTL reset.
    #[serde(default = "default_job_timeout")]
    pub job_timeout_ms: u64,
    /// How long the first handshake with the simulation may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// The VMs.
    pub vm: Vec<VmConfig>,
}

fn default_job_timeout() -> u64 {
    DEFAULT_JOB_TIMEOUT_MS
}

fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Unreadable file.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML, unknown or missing keys.
    #[error("configuration {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// Inconsistent content.
    #[error("configuration {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl MediatorConfig {
    /// Reads and checks a configuration; `job_model` becomes a path usable from here.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: origin.clone(), source })?;
        let mut c = Self::parse(&text, &origin)?;
        if c.job_model.is_relative() {
            let dir = path.parent().unwrap_or(Path::new("."));
            c.job_model = dir.join(&c.job_model);
        }
        Ok(c)
    }

    /// Parses and checks; `origin` names the text in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigFileError> {
        let c: MediatorConfig =
            toml::from_str(text).map_err(|e| ConfigFileError::Parse { path: origin.into(), source: Box::new(e) })?;
        c.check().map_err(|reason| ConfigFileError::Invalid { path: origin.into(), reason })?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.vm.is_empty() {
            return Err("no [[vm]]: name at least one VM".into());
        }
        let mut names = HashSet::new();
        let mut endpoints = HashSet::from([self.simulation.as_str()]);
        for v in &self.vm {
            if v.name.is_empty() || !names.insert(v.name.as_str()) {
                return Err(format!("VM name {:?} is empty or used twice", v.name));
            }
            if !endpoints.insert(v.endpoint.as_str()) {
                return Err(format!(
                    "VM {}: endpoint {} is used twice (each VM and the simulation need their own)",
                    v.name, v.endpoint
                ));
            }
            if v.priority > v.max() {
                return Err(format!("VM {}: priority {} is above its max_priority {}", v.name, v.priority, v.max()));
            }
        }
        if self.job_timeout_ms == 0 || self.handshake_timeout_ms == 0 {
            return Err("job_timeout_ms and handshake_timeout_ms must be above 0".into());
        }
        Ok(())
    }

    /// [`Self::job_timeout_ms`] as a duration.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_millis(self.job_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
job_model = "job-model.toml"
simulation = "ipc:///tmp/x/sim"
[[vm]]
name = "a"
endpoint = "ipc:///tmp/x/a"
pool = "A"
priority = "low"
max_priority = "high"
[[vm]]
name = "b"
endpoint = "ipc:///tmp/x/b"
"#;

    #[test]
    fn defaults_and_caps() {
        let c = MediatorConfig::parse(OK, "t").unwrap();
        assert_eq!(c.vm[0].max(), Priority::High);
        assert_eq!(c.vm[1].pool, "default");
        assert_eq!(c.vm[1].priority, Priority::Low);
        assert_eq!(c.vm[1].max(), Priority::Low);
        assert_eq!(c.job_timeout_ms, DEFAULT_JOB_TIMEOUT_MS);
    }

    #[test]
    fn mistakes_are_named() {
        let e = |from: &str, to: &str| MediatorConfig::parse(&OK.replacen(from, to, 1), "t").unwrap_err().to_string();
        assert!(e("name = \"b\"", "name = \"a\"").contains("used twice"));
        assert!(e("ipc:///tmp/x/b", "ipc:///tmp/x/sim").contains("used twice"));
        assert!(e("max_priority = \"high\"", "max_priority = \"low\"\npriority2 = 1").contains("unknown field"));
        assert!(
            e("priority = \"low\"\nmax", "priority = \"high\"\nmax_priority = \"medium\"\nx").contains("unknown field")
                || e("priority = \"low\"", "priority = \"urgent\"").contains("unknown variant")
        );
        let c = OK.replacen(
            "priority = \"low\"\nmax_priority = \"high\"",
            "priority = \"high\"\nmax_priority = \"medium\"",
            1,
        );
        assert!(MediatorConfig::parse(&c, "t").unwrap_err().to_string().contains("above its max_priority"));
        let none = "job_model = \"m\"\nsimulation = \"ipc:///s\"\nvm = []\n";
        assert!(MediatorConfig::parse(none, "t").unwrap_err().to_string().contains("no [[vm]]"));
    }
}
