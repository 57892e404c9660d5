//! A rollout's record in a fleet, `{prefix}/rollouts/{route}`: phase, step
//! and last verdict, so that every replica answers the same status and a
//! judge that takes over continues the same step. Commands on any replica
//! write it guarded by the revision they read (a race: one wins, the other
//! is told the rollout changed); the judge's writes are also guarded by its
//! leadership, so a judge deposed mid-decision writes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::judge::{Phase, State, Verdict};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    phase: Phase,
    /// 0-based, as the controller counts.
    step: usize,
    last_verdict: Option<Verdict>,
    /// Statistical tests made so far: a judge that takes over keeps
    /// spending alpha where its predecessor stopped.
    #[serde(default)]
    looks: u64,
    /// Who wrote it, and when.
    by: String,
    time: String,
}

impl Record {
    pub(super) fn of(state: &State, by: &str) -> Value {
        serde_json::to_value(Record {
            phase: state.phase,
            step: state.step,
            last_verdict: state.last_verdict.clone(),
            looks: state.looks,
            by: by.to_owned(),
            time: crate::history::now_rfc3339(),
        })
        .unwrap_or(Value::Null)
    }

    /// Lays the fleet's record at `revision` over `state` when it is not the
    /// one `state` already matches; a record this version cannot read is
    /// left alone (the next write replaces it).
    pub(super) fn adopt(value: &Value, revision: u64, state: &mut State) {
        if state.revision == revision {
            return;
        }
        match Record::deserialize(value) {
            Ok(record) => {
                state.phase = record.phase;
                state.step = record.step;
                state.last_verdict = record.last_verdict;
                state.looks = record.looks;
                state.revision = revision;
                state.observe_afresh();
            }
            Err(error) => {
                tracing::warn!(%error, revision, "a rollout record in etcd is unreadable; keeping this replica's view")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_adopted_once() {
        let state = State {
            phase: Phase::Running,
            step: 2,
            ..State::default()
        };
        let value = Record::of(&state, "pod-1");
        let mut other = State::default();
        Record::adopt(&value, 7, &mut other);
        assert_eq!(
            (other.phase, other.step, other.revision),
            (Phase::Running, 2, 7)
        );
        // Already matched: a local change since is not overwritten.
        other.step = 3;
        Record::adopt(&value, 7, &mut other);
        assert_eq!(other.step, 3);
        // Garbage changes nothing.
        Record::adopt(&serde_json::json!({"phase": 9}), 8, &mut other);
        assert_eq!((other.step, other.revision), (3, 7));
    }
}
