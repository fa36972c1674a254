//! What a saga is: its steps, their kinds, order, dependencies and retry policy.
//!
//! A [`SagaDefinition`] is plain static data. `#[derive(Saga)]` writes one for every saga enum and
//! checks its rules at compile time; [`SagaDefinition::validate`] checks the same rules at run time
//! for definitions written by hand.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The three step kinds of the compensatable / pivot / retriable classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// May fail with a business failure; compensated when the saga turns to compensation.
    Compensatable,
    /// The go/no-go step. May fail with a business failure; never undone. Once it succeeds the
    /// saga can only go forward.
    Pivot,
    /// Comes after the pivot; cannot fail for a business reason, only be retried.
    Retriable,
}

impl StepKind {
    /// The lower-case name used in the fingerprint, diagrams and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Compensatable => "compensatable",
            StepKind::Pivot => "pivot",
            StepKind::Retriable => "retriable",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-step overrides of the engine's retry policy. `None` keeps the engine default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOverride {
    /// Calls allowed before the step gives up (a retriable step or a compensation then parks the saga
    /// as `stuck`; a forward step before the pivot turns the saga to compensation).
    pub max_attempts: Option<u32>,
    /// First backoff delay in milliseconds.
    pub initial_ms: Option<u64>,
    /// Cap of the exponential backoff in milliseconds.
    pub max_ms: Option<u64>,
}

/// One step of a saga, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDefinition {
    /// Persisted step name (snake_case of the variant, or `#[step(name = "...")]`).
    pub name: &'static str,
    /// The step's kind.
    pub kind: StepKind,
    /// Indices of the steps that must have succeeded before this one starts. A sequential step
    /// depends on the step before it; `#[step(after(A, B))]` names the dependencies explicitly.
    pub after: &'static [usize],
    /// Name of the compensation method (compensatable steps only).
    pub compensation: Option<&'static str>,
    /// The step's output type as written in the saga enum (`"()"` for a unit variant). It takes
    /// part in the fingerprint: instances persisted with another output type are not driven by
    /// this definition.
    pub output: &'static str,
    /// Indices of the steps whose outputs the action and its compensation receive, in order
    /// (`#[step(reads(A, B))]`). Each is guaranteed to have succeeded when this step starts.
    pub reads: &'static [usize],
    /// Per-attempt timeout in milliseconds; `None` keeps the engine default.
    pub timeout_ms: Option<u64>,
    /// Per-step retry overrides.
    pub retry: RetryOverride,
}

impl StepDefinition {
    /// A step written by hand: `compensation` names the undo of a compensatable step (`None`
    /// for the other kinds); no output, no reads, the engine's timeout and retry policy.
    pub const fn new(
        name: &'static str,
        kind: StepKind,
        after: &'static [usize],
        compensation: Option<&'static str>,
    ) -> StepDefinition {
        StepDefinition {
            name,
            kind,
            after,
            compensation,
            output: "()",
            reads: &[],
            timeout_ms: None,
            retry: RetryOverride {
                max_attempts: None,
                initial_ms: None,
                max_ms: None,
            },
        }
    }

    /// The per-attempt timeout, if the step sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// A saga's static description: its name, version and step table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaDefinition {
    /// Persisted saga name (snake_case of the enum, or `#[saga(name = "...")]`).
    pub name: &'static str,
    /// `#[saga(version = N)]`, 1 by default. Bump it when the meaning of a step changes without
    /// its shape changing, so that old instances are not driven by new code.
    pub version: u32,
    /// The steps in declaration order.
    pub steps: &'static [StepDefinition],
}

/// A rule of [`SagaDefinition::validate`] that a hand-written definition broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The saga has no step.
    #[error("saga `{0}` has no steps")]
    Empty(&'static str),
    /// Two steps share a persisted name.
    #[error("step name `{0}` is used twice")]
    DuplicateName(&'static str),
    /// More than one pivot.
    #[error("step `{0}` is a second pivot; a saga has at most one")]
    SecondPivot(&'static str),
    /// A compensatable step follows a pivot or a retriable step.
    #[error("compensatable step `{0}` comes after a pivot or retriable step")]
    CompensatableAfterPivot(&'static str),
    /// A retriable step comes before the pivot.
    #[error("retriable step `{0}` comes before the pivot")]
    RetriableBeforePivot(&'static str),
    /// A dependency index is out of range or not an earlier step.
    #[error("step `{0}` depends on a step that is not declared before it")]
    BadDependency(&'static str),
    /// A compensatable step waits on a pivot or retriable step.
    #[error("compensatable step `{0}` waits on a pivot or retriable step")]
    CompensatableWaitsOnPivot(&'static str),
    /// A compensatable step without a compensation, or another kind with one.
    #[error("step `{0}` must have a compensation exactly when it is compensatable")]
    Compensation(&'static str),
    /// A step reads the output of a step that is not guaranteed to have succeeded before it
    /// starts.
    #[error(
        "step `{reader}` reads the output of `{read}`, which is not guaranteed to have succeeded before it"
    )]
    UnavailableRead {
        /// The step that reads.
        reader: &'static str,
        /// The step it reads.
        read: &'static str,
    },
}

impl SagaDefinition {
    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the saga has no steps (never true for a derived saga).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Index of the pivot step, if any.
    pub fn pivot(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.kind == StepKind::Pivot)
    }

    /// Index of the step with this persisted name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Checks the rules that `#[derive(Saga)]` enforces at compile time. Dependencies must point
    /// to earlier steps, which also rules out cycles.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.steps.is_empty() {
            return Err(DefinitionError::Empty(self.name));
        }
        let mut seen_pivot = false;
        let mut seen_forward_only = false;
        for (i, step) in self.steps.iter().enumerate() {
            if self.steps[..i].iter().any(|s| s.name == step.name) {
                return Err(DefinitionError::DuplicateName(step.name));
            }
            if step.compensation.is_some() != (step.kind == StepKind::Compensatable) {
                return Err(DefinitionError::Compensation(step.name));
            }
            match step.kind {
                StepKind::Compensatable if seen_forward_only => {
                    return Err(DefinitionError::CompensatableAfterPivot(step.name));
                }
                StepKind::Compensatable => {}
                StepKind::Pivot if seen_pivot => {
                    return Err(DefinitionError::SecondPivot(step.name));
                }
                StepKind::Pivot => {
                    seen_pivot = true;
                    seen_forward_only = true;
                }
                StepKind::Retriable => seen_forward_only = true,
            }
            for &dep in step.after {
                if dep >= i {
                    return Err(DefinitionError::BadDependency(step.name));
                }
                if step.kind == StepKind::Compensatable
                    && self.steps[dep].kind != StepKind::Compensatable
                {
                    return Err(DefinitionError::CompensatableWaitsOnPivot(step.name));
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let done = self.guaranteed(i);
            if let Some(&read) = step.reads.iter().find(|&&r| r >= i || !done[r]) {
                return Err(DefinitionError::UnavailableRead {
                    reader: step.name,
                    read: self.steps.get(read).map_or("?", |s| s.name),
                });
            }
        }
        if let Some(p) = self.pivot()
            && let Some(r) = self.steps[..p]
                .iter()
                .find(|s| s.kind == StepKind::Retriable)
        {
            return Err(DefinitionError::RetriableBeforePivot(r.name));
        }
        Ok(())
    }

    /// The steps that have succeeded whenever step `i` starts (indexed by step): its
    /// dependencies, transitively, and the implicit order around the point of no return (the
    /// pivot waits for every compensatable step; a retriable step waits for the pivot, or
    /// without one for every compensatable step). These are the steps it may read.
    pub fn guaranteed(&self, i: usize) -> Vec<bool> {
        let pivot = self.pivot();
        let direct = |k: usize| -> Vec<usize> {
            let step = &self.steps[k];
            let compensatable =
                || (0..self.steps.len()).filter(|&c| self.steps[c].kind == StepKind::Compensatable);
            let mut deps: Vec<usize> = step.after.to_vec();
            match (step.kind, pivot) {
                (StepKind::Pivot, _) | (StepKind::Retriable, None) => deps.extend(compensatable()),
                (StepKind::Retriable, Some(p)) => deps.push(p),
                (StepKind::Compensatable, _) => {}
            }
            deps.retain(|&d| d < k);
            deps
        };
        let mut done = vec![false; self.steps.len()];
        let mut todo = direct(i);
        while let Some(k) = todo.pop() {
            if !done[k] {
                done[k] = true;
                todo.extend(direct(k));
            }
        }
        done
    }

    /// A stable hash of the saga's name, version, and each step's name, kind, position,
    /// dependencies and output type (when it is not `()`, so that sagas whose steps have no
    /// output keep the fingerprint they had before output types took part). Stored with every
    /// instance; an engine refuses to drive an instance whose fingerprint it does not know.
    /// Timeouts, retry policy and reads are deliberately left out: they may be changed without
    /// orphaning running instances.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"saga-definition/1\n");
        h.update(self.name.as_bytes());
        h.update(b"\nversion=");
        h.update(self.version.to_string().as_bytes());
        for (i, step) in self.steps.iter().enumerate() {
            h.update(format!("\n{i}:{}:{}:", step.name.len(), step.name).as_bytes());
            h.update(step.kind.as_str().as_bytes());
            for dep in step.after {
                h.update(format!(",{dep}").as_bytes());
            }
            if step.output != "()" {
                h.update(format!(":output={}", step.output).as_bytes());
            }
        }
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A Mermaid flowchart of the saga: steps, their kinds and dependencies, each edge labelled
    /// with the output type of the step it leaves (unless that is `()`).
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, step) in self.steps.iter().enumerate() {
            let label = match step.compensation {
                Some(c) => format!("{}<br/>compensate: {}", step.name, c),
                None => format!("{}<br/>{}", step.name, step.kind),
            };
            out.push_str(&format!("    s{i}[\"{label}\"]\n"));
        }
        for (i, step) in self.steps.iter().enumerate() {
            for &dep in step.after {
                out.push_str(&mermaid_edge(dep, i, self.steps[dep].output));
            }
        }
        out
    }
}

/// One edge of the Mermaid flowchart, labelled with `output` unless it is `()`. `<` and `>` are
/// written as Mermaid entities so that generic types survive the HTML label. The derive writes
/// the same text for its `DIAGRAM` constant.
fn mermaid_edge(from: usize, to: usize, output: &str) -> String {
    if output == "()" {
        format!("    s{from} --> s{to}\n")
    } else {
        let label = output
            .replace('<', "#lt;")
            .replace('>', "#gt;")
            .replace('"', "#quot;");
        format!("    s{from} -->|\"{label}\"| s{to}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn step(name: &'static str, kind: StepKind, after: &'static [usize]) -> StepDefinition {
        let compensation = match kind {
            StepKind::Compensatable => Some("undo"),
            _ => None,
        };
        StepDefinition {
            output: "u64",
            ..StepDefinition::new(name, kind, after, compensation)
        }
    }

    fn saga(steps: &'static [StepDefinition]) -> SagaDefinition {
        SagaDefinition {
            name: "trip",
            version: 1,
            steps,
        }
    }

    #[test]
    fn guaranteed_steps_follow_dependencies_and_the_point_of_no_return() {
        static STEPS: [StepDefinition; 5] = [
            step("flight", StepKind::Compensatable, &[]),
            step("hotel", StepKind::Compensatable, &[]),
            step("car", StepKind::Compensatable, &[0]),
            step("pay", StepKind::Pivot, &[2]),
            step("notify", StepKind::Retriable, &[3]),
        ];
        let def = saga(&STEPS);
        assert_eq!(def.guaranteed(0), [false; 5]);
        assert_eq!(def.guaranteed(2), [true, false, false, false, false]);
        // The pivot waits for every compensatable step, listed or not.
        assert_eq!(def.guaranteed(3), [true, true, true, false, false]);
        assert_eq!(def.guaranteed(4), [true, true, true, true, false]);
    }

    #[test]
    fn validate_refuses_a_read_that_is_not_guaranteed() {
        static SIBLING: [StepDefinition; 3] = [
            step("flight", StepKind::Compensatable, &[]),
            step("hotel", StepKind::Compensatable, &[]),
            StepDefinition {
                reads: &[1],
                ..step("car", StepKind::Compensatable, &[0])
            },
        ];
        assert_eq!(
            saga(&SIBLING).validate(),
            Err(DefinitionError::UnavailableRead {
                reader: "car",
                read: "hotel"
            })
        );
        static LATER: [StepDefinition; 2] = [
            StepDefinition {
                reads: &[1],
                ..step("flight", StepKind::Compensatable, &[])
            },
            step("hotel", StepKind::Compensatable, &[0]),
        ];
        assert!(matches!(
            saga(&LATER).validate(),
            Err(DefinitionError::UnavailableRead {
                reader: "flight",
                ..
            })
        ));
        static FINE: [StepDefinition; 3] = [
            step("flight", StepKind::Compensatable, &[]),
            step("hotel", StepKind::Compensatable, &[]),
            StepDefinition {
                reads: &[0, 1],
                ..step("pay", StepKind::Pivot, &[])
            },
        ];
        assert_eq!(saga(&FINE).validate(), Ok(()));
    }
}
