//! Operator actions: retry a saga now, or turn it to compensation.

use super::driver::Control;
use super::{Engine, EngineError};
use crate::machine::{self, Event, Phase, SagaState, SagaStatus};
use crate::store::InstanceRecord;

/// The reason recorded on a saga that an operator turned to compensation.
const OPERATOR_COMPENSATION_REASON: &str = "compensation requested by an operator";

impl Engine {
    /// Operator action: wake a running or compensating saga now (skipping its backoff), or give
    /// a stuck one a fresh attempt budget and resume it where it stopped. Refused with
    /// [`EngineError::Finished`] for finished sagas.
    pub async fn retry(&self, gid: &str) -> Result<(), EngineError> {
        let record = self.existing(gid).await?;
        if !machine::can_retry(&record.state) {
            return Err(EngineError::Finished {
                gid: gid.to_string(),
                status: record.state.status,
            });
        }
        self.operator_event(record, Event::RetryRequested).await
    }

    /// Operator action: turn a saga that has not passed its pivot to compensation (an attempt
    /// in flight is abandoned as in doubt), or resume a saga stuck while compensating. Refused
    /// past the pivot ([`EngineError::PastPivot`]) and once finished ([`EngineError::Finished`]).
    pub async fn compensate(&self, gid: &str) -> Result<(), EngineError> {
        let record = self.existing(gid).await?;
        let saga = self.saga_for(&record)?;
        if !machine::can_compensate(saga.definition(), &record.state) {
            let gid = gid.to_string();
            return Err(if record.state.status.is_finished() {
                EngineError::Finished {
                    gid,
                    status: record.state.status,
                }
            } else {
                EngineError::PastPivot { gid }
            });
        }
        self.operator_event(
            record,
            Event::CompensateRequested {
                reason: OPERATOR_COMPENSATION_REASON.into(),
            },
        )
        .await
    }

    /// Acts on an operator event that its local driver received only as it stopped: the same
    /// action again, now that no driver of `gid` is here. An action the saga no longer allows
    /// (it finished meanwhile) is moot.
    pub(super) async fn redeliver(&self, gid: &str, event: Event) {
        if self.is_killed() || *self.inner.shutdown.borrow() {
            return;
        }
        let done = match event {
            Event::RetryRequested => self.retry(gid).await,
            Event::CompensateRequested { .. } => self.compensate(gid).await,
            _ => Ok(()),
        };
        match done {
            Ok(()) => tracing::debug!(gid, "operator action handed on after its driver stopped"),
            Err(e) => {
                tracing::debug!(gid, error = %e, "operator action moot after its driver stopped")
            }
        }
    }

    /// The stored instance of `gid`, or [`EngineError::NotFound`].
    async fn existing(&self, gid: &str) -> Result<InstanceRecord, EngineError> {
        self.inner
            .clock
            .io(self.inner.store.load(gid))
            .await?
            .ok_or_else(|| EngineError::NotFound(gid.to_string()))
    }

    /// Hands `event` to the saga's driver in this process, or claims the saga (fencing out any
    /// other driver) and drives it here.
    async fn operator_event(
        &self,
        record: InstanceRecord,
        event: Event,
    ) -> Result<(), EngineError> {
        let local = self
            .inner
            .drivers
            .lock()
            .ok()
            .and_then(|d| d.get(&record.gid).cloned());
        if let Some(tx) = local
            && tx.send(Control::Event(event.clone())).is_ok()
        {
            return Ok(());
        }
        // Not driven here: take the saga (fencing out any other driver) and drive it.
        let saga = self.saga_for(&record)?;
        let slot = self
            .inner
            .capacity
            .try_take()
            .ok_or(EngineError::Overloaded {
                limit: self.inner.capacity.limit(),
            })?;
        let claimed =
            self.inner
                .store
                .claim_one(&record.gid, &self.inner.engine_id, self.lease_until());
        let Some(fence) = self.inner.clock.io(claimed).await? else {
            return Err(EngineError::NotFound(record.gid));
        };
        let record = self
            .inner
            .clock
            .io(self.inner.store.load(&record.gid))
            .await?
            .ok_or_else(|| EngineError::NotFound(record.gid.clone()))?;
        let event = on_claim(&record.state, event);
        self.spawn_record(saga, record, fence, event, slot);
        Ok(())
    }
}

/// The event a driver that has just claimed a saga for an operator starts with. Calls in
/// flight elsewhere are lost to it, so it starts from the stored state: a stuck saga gets the
/// operator's event (resumed, or turned to compensation); one that runs without being stuck
/// gets a fresh dispatch, which is what `retry` asks, and what `compensate` comes to once the
/// saga is already compensating (the event itself would change nothing and start no call).
fn on_claim(state: &SagaState, event: Event) -> Event {
    let stuck = state.status == SagaStatus::Stuck;
    match event {
        Event::RetryRequested if !stuck => Event::Start,
        Event::CompensateRequested { .. } if !stuck && state.phase == Phase::Compensating => {
            Event::Start
        }
        event => event,
    }
}
