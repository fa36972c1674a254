//! A saga's diagram as SVG, drawn on the server from its definition: one box per step, in
//! columns by the depth of its dependencies, an arrow for each `after` edge labelled with the
//! output type it carries (unless `()`), and each box coloured by its step's state.

use maud::{Markup, html};

use crate::definition::{SagaDefinition, StepKind};
use crate::engine::StepView;
use crate::machine::{SagaStatus, StepStatus};

const BOX_WIDTH: usize = 220;
const BOX_HEIGHT: usize = 54;
const COLUMN_GAP: usize = 64;
const ROW_GAP: usize = 22;
const MARGIN: usize = 12;
/// Characters of a step name that fit in a box; longer ones are cut, the whole name in its title.
const NAME_FIT: usize = 26;
/// Characters of an edge label shown; longer ones are cut, the whole type in its title.
const LABEL_FIT: usize = 18;

/// What a box of the diagram shows about its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// A definition's step, with no instance.
    Definition,
    /// Not started.
    Pending,
    /// Its action has been called and is not finished.
    Running,
    /// Its action succeeded.
    Succeeded,
    /// Its action failed for a business reason.
    Failed,
    /// Its compensation has been called and is not finished.
    Compensating,
    /// Its compensation ran.
    Compensated,
    /// Never started; nothing to compensate.
    Skipped,
    /// The step whose attempt budget ran out: the saga waits for an operator.
    Stuck,
}

impl Tone {
    /// The tone of `step` in a saga of status `saga`.
    pub(crate) fn of(step: &StepView, saga: SagaStatus) -> Tone {
        let stuck = saga == SagaStatus::Stuck;
        match step.status {
            StepStatus::Compensated => Tone::Compensated,
            StepStatus::Skipped => Tone::Skipped,
            _ if step.compensate_attempts > 0 && stuck => Tone::Stuck,
            _ if step.compensate_attempts > 0 => Tone::Compensating,
            StepStatus::Failed => Tone::Failed,
            StepStatus::Succeeded => Tone::Succeeded,
            StepStatus::Pending if step.attempts > 0 && stuck => Tone::Stuck,
            StepStatus::Pending if step.attempts > 0 => Tone::Running,
            StepStatus::Pending => Tone::Pending,
        }
    }

    /// The CSS class of a box and a badge of this tone.
    pub(crate) fn class(self) -> &'static str {
        match self {
            Tone::Definition => "tone-definition",
            Tone::Pending => "tone-pending",
            Tone::Running => "tone-running",
            Tone::Succeeded => "tone-succeeded",
            Tone::Failed => "tone-failed",
            Tone::Compensating => "tone-compensating",
            Tone::Compensated => "tone-compensated",
            Tone::Skipped => "tone-skipped",
            Tone::Stuck => "tone-stuck",
        }
    }

    /// The word shown for this tone.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Tone::Definition => "",
            Tone::Pending => "pending",
            Tone::Running => "running",
            Tone::Succeeded => "succeeded",
            Tone::Failed => "failed",
            Tone::Compensating => "compensating",
            Tone::Compensated => "compensated",
            Tone::Skipped => "skipped",
            Tone::Stuck => "stuck",
        }
    }

    /// The tones a saga's diagram may show, for its legend.
    pub(crate) const LEGEND: [Tone; 8] = [
        Tone::Pending,
        Tone::Running,
        Tone::Succeeded,
        Tone::Failed,
        Tone::Compensating,
        Tone::Compensated,
        Tone::Skipped,
        Tone::Stuck,
    ];
}

/// The column of each step: 0 without dependencies, else one past its deepest dependency.
fn columns(def: &SagaDefinition) -> Vec<usize> {
    let mut column = vec![0; def.steps.len()];
    for (i, step) in def.steps.iter().enumerate() {
        // Dependencies are earlier steps (the definition is validated), so theirs are known.
        column[i] = step
            .after
            .iter()
            .filter(|&&d| d < i)
            .map(|&d| column[d] + 1)
            .max()
            .unwrap_or(0);
    }
    column
}

/// The SVG of `def`, with `tones[i]` for step `i` (steps beyond `tones` are
/// [`Tone::Definition`]). `id` makes the SVG's internal ids unique on its page.
pub(crate) fn svg(def: &SagaDefinition, tones: &[Tone], id: &str) -> Markup {
    let column = columns(def);
    let mut row = vec![0; def.steps.len()];
    let mut rows_in = vec![0usize; column.iter().max().map_or(0, |m| m + 1)];
    for (i, &c) in column.iter().enumerate() {
        row[i] = rows_in[c];
        rows_in[c] += 1;
    }
    let x = |i: usize| MARGIN + column[i] * (BOX_WIDTH + COLUMN_GAP);
    let y = |i: usize| MARGIN + row[i] * (BOX_HEIGHT + ROW_GAP);
    let width =
        2 * MARGIN + rows_in.len() * BOX_WIDTH + rows_in.len().saturating_sub(1) * COLUMN_GAP;
    let rows = rows_in.iter().copied().max().unwrap_or(0);
    let height = 2 * MARGIN + rows * BOX_HEIGHT + rows.saturating_sub(1) * ROW_GAP;
    let arrow = format!("{id}-arrow");
    html! {
        svg.diagram xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height)
            aria-label=(format!("Diagram of the saga {}", def.name)) {
            defs {
                marker id=(arrow) viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path.arrow-head d="M 0 0 L 10 5 L 0 10 z" {}
                }
            }
            @for (i, step) in def.steps.iter().enumerate() {
                @for &d in step.after.iter().filter(|&&d| d < i) {
                    @let (x1, y1) = (x(d) + BOX_WIDTH, y(d) + BOX_HEIGHT / 2);
                    @let (x2, y2) = (x(i), y(i) + BOX_HEIGHT / 2);
                    @let mid = (x1 + x2) / 2;
                    path.edge d=(format!("M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}"))
                        marker-end=(format!("url(#{arrow})")) {}
                    @let output = def.steps[d].output;
                    @if output != "()" {
                        text.edge-label x=(mid) y=((y1 + y2) / 2 - 5) text-anchor="middle" {
                            title { (output) }
                            (fit(output, LABEL_FIT))
                        }
                    }
                }
            }
            @for (i, step) in def.steps.iter().enumerate() {
                @let tone = tones.get(i).copied().unwrap_or(Tone::Definition);
                @let kind = if step.kind == StepKind::Pivot { " kind-pivot" } else { "" };
                g class=(format!("step {}{kind}", tone.class())) data-step=(step.name) {
                    title { (step.name) " (" (step.kind) ")" @if tone != Tone::Definition { ": " (tone.label()) } }
                    rect x=(x(i)) y=(y(i)) width=(BOX_WIDTH) height=(BOX_HEIGHT) rx="7" {}
                    text.step-name x=(x(i) + 10) y=(y(i) + 22) { (fit(step.name, NAME_FIT)) }
                    text.step-detail x=(x(i) + 10) y=(y(i) + 41) {
                        (step.kind)
                        @if tone != Tone::Definition { " · " (tone.label()) }
                    }
                }
            }
        }
    }
}

/// `text` cut to `max` characters, the cut marked with an ellipsis.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{RetryOverride, StepDefinition};

    const fn step(name: &'static str, kind: StepKind, after: &'static [usize]) -> StepDefinition {
        StepDefinition {
            name,
            kind,
            after,
            compensation: None,
            output: "Vec<u8>",
            reads: &[],
            timeout_ms: None,
            retry: RetryOverride {
                max_attempts: None,
                initial_ms: None,
                max_ms: None,
            },
        }
    }

    static STEPS: [StepDefinition; 4] = [
        step("flight", StepKind::Compensatable, &[]),
        step("hotel", StepKind::Compensatable, &[]),
        step("a_step_with_a_rather_long_name", StepKind::Pivot, &[0, 1]),
        step("notify", StepKind::Retriable, &[2]),
    ];
    const TRIP: SagaDefinition = SagaDefinition {
        name: "trip",
        version: 1,
        steps: &STEPS,
    };

    #[test]
    fn steps_are_laid_out_in_columns_by_dependency_depth() {
        assert_eq!(columns(&TRIP), [0, 0, 1, 2]);
    }

    #[test]
    fn the_svg_has_a_box_per_step_an_arrow_per_edge_and_escaped_labels() {
        let tones = [Tone::Succeeded, Tone::Failed, Tone::Stuck];
        let svg = svg(&TRIP, &tones, "d1").into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert_eq!(svg.matches("class=\"edge\"").count(), 3);
        assert!(svg.contains("tone-succeeded") && svg.contains("tone-failed"));
        assert!(svg.contains("tone-stuck kind-pivot"), "{svg}");
        assert!(
            svg.contains("tone-definition"),
            "a step without a tone: {svg}"
        );
        assert!(
            svg.contains("Vec&lt;u8&gt;") && !svg.contains("Vec<u8>"),
            "{svg}"
        );
        assert!(svg.contains("a_step_with_a_rather_long…"), "{svg}");
        assert!(svg.contains("url(#d1-arrow)"));
    }
}
