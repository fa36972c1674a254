//! Reading sagas: one saga with its steps, a list of summaries, the registered definitions.

use serde::Serialize;

use super::driver::Finished;
use super::{Engine, EngineError};
use crate::definition::SagaDefinition;
use crate::machine::{self, SagaState, SagaStatus, StepStatus};
use crate::step::{OutputsError, SagaOutputs};
use crate::store::{InstanceRecord, SagaSummary};

/// One step of a [`SagaView`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// Persisted step name.
    pub name: String,
    /// Step status; serialized as its persisted name ([`StepStatus::as_str`]).
    #[serde(serialize_with = "serialize_step_status")]
    pub status: StepStatus,
    /// Calls of the action.
    pub attempts: u32,
    /// Calls of the undo.
    pub compensate_attempts: u32,
    /// The latest error seen.
    pub last_error: Option<String>,
    /// The action's output, once it succeeded.
    pub output: Option<serde_json::Value>,
}

/// `StepStatus` has no `Serialize` of its own; the view shows the persisted name.
fn serialize_step_status<S: serde::Serializer>(
    status: &StepStatus,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(status.as_str())
}

/// A saga as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaView {
    /// The gid.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Status.
    pub status: SagaStatus,
    /// Why it was compensated or is stuck.
    pub reason: Option<String>,
    /// Steps in order.
    pub steps: Vec<StepView>,
    /// Input as JSON.
    pub input: serde_json::Value,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Last update, ms since epoch.
    pub updated_at: i64,
    /// Whether the saga may have passed its point of no return.
    pub past_pivot: bool,
}

impl SagaView {
    /// The outputs of this saga's steps, decoded through the saga type:
    /// `view.outputs::<SubmitOrder>()?.order_create` is an `Option<OrderId>`. An error when the
    /// view is of another saga, or a persisted output does not decode as its type.
    pub fn outputs<S: SagaOutputs>(&self) -> Result<S::Outputs, OutputsError> {
        let def = S::definition();
        let same_steps = self.steps.len() == def.steps.len()
            && self
                .steps
                .iter()
                .zip(def.steps)
                .all(|(v, d)| v.name == d.name);
        if self.saga != def.name || !same_steps {
            return Err(OutputsError::OtherSaga {
                expected: def.name,
                found: self.saga.clone(),
            });
        }
        S::decode_outputs(self.steps.iter().map(|s| s.output.clone()).collect())
    }
}

impl Engine {
    /// Reads a saga; `None` if no saga has this gid.
    pub async fn status(&self, gid: &str) -> Result<Option<SagaView>, EngineError> {
        let Some(record) = self.inner.clock.io(self.inner.store.load(gid)).await? else {
            return Ok(None);
        };
        Ok(Some(self.view(record)))
    }

    /// The view of a stored saga.
    pub(crate) fn view(&self, record: InstanceRecord) -> SagaView {
        let past_pivot = self
            .inner
            .by_fingerprint
            .get(&record.fingerprint)
            .map(|s| machine::past_point_of_no_return(s.definition(), &record.state))
            .unwrap_or(false);
        SagaView {
            steps: step_views(record.step_names.iter().map(String::as_str), &record.state),
            gid: record.gid,
            saga: record.saga,
            status: record.state.status,
            reason: record.state.reason,
            input: record.input,
            created_at: record.created_at,
            updated_at: record.updated_at,
            past_pivot,
        }
    }

    /// Lists sagas, newest first, optionally of one status.
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> Result<Vec<SagaSummary>, EngineError> {
        Ok(self
            .inner
            .clock
            .io(self.inner.store.list(status, limit))
            .await?)
    }

    /// The registered definition of a stored saga, by its fingerprint; `None` when this engine
    /// does not know it.
    #[cfg(feature = "console")]
    pub(crate) fn definition_of(&self, fingerprint: &str) -> Option<&'static SagaDefinition> {
        self.inner
            .by_fingerprint
            .get(fingerprint)
            .map(|s| s.definition())
    }

    /// Every definition registered with this engine, older versions of a saga included.
    pub fn definitions(&self) -> Vec<&'static SagaDefinition> {
        self.inner
            .by_fingerprint
            .values()
            .map(|s| s.definition())
            .collect()
    }

    /// The newest registered version of each saga: what a submit creates.
    pub fn newest_definitions(&self) -> Vec<&'static SagaDefinition> {
        self.inner
            .by_name
            .values()
            .map(|s| s.definition())
            .collect()
    }
}

/// The view of a saga its driver has just finished, from the state it persisted: the same view
/// as [`Engine::status`] reads back from the store.
pub(crate) fn of_finished(
    def: &SagaDefinition,
    gid: &str,
    input: serde_json::Value,
    created_at: i64,
    finished: Finished,
) -> SagaView {
    let state = finished.state;
    SagaView {
        gid: gid.to_string(),
        saga: def.name.to_string(),
        steps: step_views(def.steps.iter().map(|s| s.name), &state),
        past_pivot: machine::past_point_of_no_return(def, &state),
        status: state.status,
        reason: state.reason,
        input,
        created_at,
        updated_at: finished.updated_at,
    }
}

fn step_views<'a>(names: impl Iterator<Item = &'a str>, state: &SagaState) -> Vec<StepView> {
    names
        .zip(&state.steps)
        .map(|(name, s)| StepView {
            name: name.to_string(),
            status: s.status,
            attempts: s.attempts,
            compensate_attempts: s.compensate_attempts,
            last_error: s.last_error.clone(),
            output: s.output.clone(),
        })
        .collect()
}
