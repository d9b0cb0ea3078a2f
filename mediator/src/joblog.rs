//! Reading the job log back, and the scheduling rule checked on it (docs/mediator.md, "Job log").
//!
//! The mediator writes one [`JobRecord`] per JSON line. [`check_order`] is the scheduler's
//! promise restated on what really happened, for tests and for users who doubt a run: whenever a
//! job started, no job waiting at that moment had a higher priority, and none of the same priority
//! had been submitted before it.

use std::path::Path;

use crate::core::JobRecord;

/// Reads a job log (one JSON object per line; blank lines are skipped).
pub fn read(path: &Path) -> Result<Vec<JobRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read job log {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

/// True if `x` was waiting in the queue at time `t` (submitted before `t`, started after it or
/// never). Times are in microseconds; a job submitted in the same microsecond does not count, as
/// the log cannot tell whether it came before or after the start.
fn waiting_at(x: &JobRecord, t: u64) -> bool {
    x.submitted_us < t && x.started_us.map_or(x.finished_us > t, |s| s > t)
}

/// Checks strict priority and first come first served within a priority on a job log: `Err`
/// names the first job that started while a job that should have gone first was waiting.
pub fn check_order(records: &[JobRecord]) -> Result<(), String> {
    for s in records {
        let Some(t) = s.started_us else { continue };
        for x in records.iter().filter(|x| x.seq != s.seq && waiting_at(x, t)) {
            let before = x.priority > s.priority || (x.priority == s.priority && x.seq < s.seq);
            if before {
                return Err(format!(
                    "job {} of {} ({}, submitted at {} us) started at {t} us while job {} of {} ({}, submitted at {} us) waited",
                    s.seq, s.vm, s.priority, s.submitted_us, x.seq, x.vm, x.priority, x.submitted_us
                ));
            }
        }
    }
    Ok(())
}

/// Jobs that overtook: started while a job of lower priority submitted before them was waiting.
/// Returns (the job, one job it overtook), by start time.
pub fn overtakes(records: &[JobRecord]) -> Vec<(&JobRecord, &JobRecord)> {
    let mut out: Vec<(&JobRecord, &JobRecord)> = records
        .iter()
        .filter_map(|s| {
            let t = s.started_us?;
            records
                .iter()
                .find(|x| {
                    x.seq != s.seq && waiting_at(x, t) && x.priority < s.priority && x.submitted_us < s.submitted_us
                })
                .map(|x| (s, x))
        })
        .collect();
    out.sort_by_key(|(s, _)| s.started_us);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Outcome;
    use crate::model::Priority::{self, *};

    fn rec(seq: u64, p: Priority, submitted: u64, started: u64) -> JobRecord {
        JobRecord {
            seq,
            vm: format!("vm{seq}"),
            pool: "A".into(),
            priority: p,
            outcome: Outcome::Done,
            submitted_us: submitted,
            started_us: Some(started),
            finished_us: started + 10,
            queued_us: started - submitted,
            cycles: 1,
            dma_wait: 0,
            error: 0,
        }
    }

    #[test]
    fn a_correct_log_passes_and_its_overtakes_are_found() {
        // 1 runs; 2 (low) and 3 (high) wait; 3 goes first, then 2.
        let log = [rec(1, Low, 0, 0), rec(2, Low, 1, 30), rec(3, High, 2, 10)];
        assert_eq!(check_order(&log), Ok(()));
        let o = overtakes(&log);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].0.seq, o[0].1.seq), (3, 2));
    }

    #[test]
    fn priority_inversion_and_fifo_violation_are_reported() {
        let inverted = [rec(1, Low, 0, 0), rec(2, Low, 1, 10), rec(3, High, 2, 30)];
        assert!(check_order(&inverted).unwrap_err().contains("job 2"));
        let unfair = [rec(1, Low, 0, 0), rec(2, Medium, 1, 30), rec(3, Medium, 2, 10)];
        assert!(check_order(&unfair).unwrap_err().contains("job 3"));
        // Submitted in the same microsecond as the start: not known to have waited.
        let same = [rec(1, Low, 0, 0), rec(2, Low, 10, 20), rec(3, High, 20, 30)];
        assert_eq!(check_order(&same), Ok(()));
    }

    #[test]
    fn records_round_trip_through_json_lines() {
        let dir = std::env::temp_dir().join(format!("cosim-joblog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("jobs.jsonl");
        let log = [rec(1, Low, 0, 0), rec(2, High, 1, 10)];
        let text: String = log.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        std::fs::write(&p, text + "\n").unwrap();
        assert_eq!(read(&p).unwrap(), log);
        std::fs::write(&p, "{\"seq\":1}\n").unwrap();
        assert!(read(&p).unwrap_err().contains("jobs.jsonl:1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
