//! The rules of a saga definition (docs/semantics.md, "Compile-time rules"), checked on the typed input. Each rule
//! records its errors in the context and carries on, so the user sees every mistake at once.

use std::collections::HashMap;
use syn::Ident;

use crate::ast::{Input, Output, Step};
use crate::attr::Kind;
use crate::ctxt::Ctxt;

/// Longest persisted saga or step name, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Checks every rule.
pub fn check(cx: &Ctxt, input: &Input<'_>) {
    check_container(cx, input);
    let Some(steps) = &input.steps else {
        return;
    };
    check_kinds(cx, steps);
    check_order(cx, steps);
    check_names(cx, steps);
    check_methods(cx, input);
    check_after(cx, input);
    check_reads(cx, input);
    check_policies(cx, steps);
}

/// Rule 5 (container part): input type, version, name, no generics, at least one step.
fn check_container(cx: &Ctxt, input: &Input<'_>) {
    if input.attrs.input.is_none() {
        cx.error_spanned_by(
            input.ident,
            format!(
                "missing `#[saga(input = Type)]` on saga `{}`: name the saga's input type, which is \
                 persisted with every instance and handed to every step",
                input.ident
            ),
        );
    }
    if let Some(version) = &input.attrs.version
        && version.value == 0
    {
        cx.error_at(
            version.span,
            "saga versions start at 1; write `version = 1` or more",
        );
    }
    if let Err(why) = check_name(&input.name) {
        let hint = if input.attrs.name.is_some() {
            "choose another `#[saga(name = \"...\")]`"
        } else {
            "set one with `#[saga(name = \"...\")]`"
        };
        cx.error_at(input.name_span, format!("saga name {why}; {hint}"));
    }
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        cx.error_spanned_by(
            input.generics,
            "saga enums cannot be generic: a saga has one persisted step table and fingerprint, \
             so its input and output types must be concrete; declare one enum per saga",
        );
    }
    if input.steps.as_ref().is_some_and(|s| s.is_empty()) {
        cx.error_spanned_by(
            input.ident,
            format!(
                "saga `{}` has no steps; add one variant per step, e.g. `#[compensate(undo_reserve)] Reserve`",
                input.ident
            ),
        );
    }
}

/// Rule 1: every step has a kind. (Two kinds on one step are reported while parsing.)
fn check_kinds(cx: &Ctxt, steps: &[Step<'_>]) {
    for step in steps {
        if step.attrs.kind.is_none() && !step.attrs.malformed_kind {
            cx.error_spanned_by(
                step.ident,
                format!(
                    "step `{}` has no kind; add `#[compensate(...)]`, `#[pivot]` or `#[retriable]`: \
                     compensatable steps can be undone, the pivot is the go/no-go step, retriable \
                     steps come after it and never fail",
                    step.ident
                ),
            );
        }
    }
}

/// Rule 2: at most one pivot; compensatable steps form a prefix; retriable steps follow the pivot.
fn check_order(cx: &Ctxt, steps: &[Step<'_>]) {
    let pivot_index = steps.iter().position(|s| s.kind() == Some(Kind::Pivot));
    let mut forward_only: Option<&Step<'_>> = None;
    for (i, step) in steps.iter().enumerate() {
        let Some(kind_attr) = &step.attrs.kind else {
            continue;
        };
        match kind_attr.kind {
            Kind::Compensatable => {
                if let Some(before) = forward_only {
                    let before_kind = before.kind().map_or("", Kind::noun);
                    cx.error_spanned_by(
                        kind_attr.attr,
                        format!(
                            "compensatable step `{}` comes after the {before_kind} `{}`; compensatable \
                             steps must all come before the pivot and every retriable step, since \
                             nothing is undone once the saga goes forward only. Move `{}` above `{}`, \
                             or make it `#[retriable]` if it can never fail",
                            step.ident, before.ident, step.ident, before.ident
                        ),
                    );
                }
            }
            Kind::Pivot => {
                if let Some(first) = pivot_index.filter(|&p| p < i) {
                    cx.error_spanned_by(
                        kind_attr.attr,
                        format!(
                            "a saga has at most one pivot, and `{}` is already the pivot; make `{}` \
                             compensatable (`#[compensate(...)]`) or `#[retriable]`",
                            steps[first].ident, step.ident
                        ),
                    );
                }
                forward_only.get_or_insert(step);
            }
            Kind::Retriable => {
                if let Some(p) = pivot_index.filter(|&p| p > i) {
                    cx.error_spanned_by(
                        kind_attr.attr,
                        format!(
                            "retriable step `{}` comes before the pivot `{}`; retriable steps run once \
                             the saga can only go forward, after its pivot. Move `{}` below `{}`, or \
                             make it compensatable with `#[compensate(...)]`",
                            step.ident, steps[p].ident, step.ident, steps[p].ident
                        ),
                    );
                }
                forward_only.get_or_insert(step);
            }
        }
    }
}

/// Rule 3: persisted step names are well-formed and unique.
fn check_names(cx: &Ctxt, steps: &[Step<'_>]) {
    let mut seen: HashMap<&str, &Step<'_>> = HashMap::new();
    for step in steps {
        if let Err(why) = check_name(&step.name) {
            let hint = if step.attrs.name.is_some() {
                "choose another `#[step(name = \"...\")]`"
            } else {
                "set one with `#[step(name = \"...\")]`"
            };
            cx.error_at(step.name_span, format!("step name {why}; {hint}"));
            continue;
        }
        if let Some(first) = seen.get(step.name.as_str()) {
            cx.error_at(
                step.name_span,
                format!(
                    "step name `{}` is already used by step `{}`; persisted step names must be \
                     unique within a saga. Give one of them another `#[step(name = \"...\")]`",
                    step.name, first.ident
                ),
            );
        } else {
            seen.insert(&step.name, step);
        }
    }
}

/// The generated trait's methods (one per action, one per compensation) are distinct and are
/// valid identifiers.
fn check_methods(cx: &Ctxt, input: &Input<'_>) {
    let trait_name = input.steps_trait();
    let mut seen: HashMap<String, String> = HashMap::new();
    for step in input.steps() {
        let what = format!("the action of step `{}`", step.ident);
        if step.method == "diagram" {
            cx.error_spanned_by(
                step.ident,
                format!(
                    "a step named `{}` would clash with the generated constant `{}::DIAGRAM`; rename \
                     the variant (`#[step(name = \"{}\")]` keeps the persisted name)",
                    step.ident, input.ident, step.name
                ),
            );
        } else if syn::parse_str::<Ident>(&step.method).is_err() {
            cx.error_spanned_by(
                step.ident,
                format!(
                    "the action method of step `{}` would be named `{}`, which is a Rust keyword; \
                     rename the variant (`#[step(name = \"{}\")]` keeps the persisted name)",
                    step.ident, step.method, step.name
                ),
            );
        } else if let Some(other) = seen.get(&step.method) {
            cx.error_spanned_by(
                step.ident,
                format!(
                    "`{trait_name}` would declare method `{}` twice: for {other} and for {what}; \
                     rename the variant",
                    step.method
                ),
            );
        } else {
            seen.insert(step.method.clone(), what);
        }
    }
    for step in input.steps() {
        let Some(method) = step.compensation() else {
            continue;
        };
        let what = format!("the compensation of step `{}`", step.ident);
        if let Some(other) = seen.get(&method.to_string()) {
            cx.error_spanned_by(
                method,
                format!(
                    "`{trait_name}` would declare method `{method}` twice: for {other} and for {what}; \
                     choose another compensation name, e.g. `{}_revert`",
                    step.method
                ),
            );
        } else {
            seen.insert(method.to_string(), what);
        }
    }
}

/// Rule 4: `after(...)` names earlier steps of this saga, without cycles, and never makes a
/// compensatable step wait on a pivot or retriable step.
fn check_after(cx: &Ctxt, input: &Input<'_>) {
    let steps = input.steps();
    for (i, step) in steps.iter().enumerate() {
        let Some(after) = &step.attrs.after else {
            continue;
        };
        let mut listed: Vec<&Ident> = Vec::new();
        for dep in &after.steps {
            if listed.contains(&dep) {
                cx.error_spanned_by(
                    dep,
                    format!("`{dep}` is listed twice in `after(...)`; keep one"),
                );
                continue;
            }
            listed.push(dep);
            let Some(j) = input.index_of(dep) else {
                let earlier: Vec<String> = steps[..i]
                    .iter()
                    .map(|s| format!("`{}`", s.ident))
                    .collect();
                let hint = if earlier.is_empty() {
                    format!(
                        "`{}` is the first step, so it can wait on nothing",
                        step.ident
                    )
                } else {
                    format!(
                        "steps declared before `{}`: {}",
                        step.ident,
                        earlier.join(", ")
                    )
                };
                cx.error_spanned_by(
                    dep,
                    format!(
                        "no step `{dep}` in saga `{}`; `after(...)` takes variant names of this enum ({hint})",
                        input.ident
                    ),
                );
                continue;
            };
            if j == i {
                cx.error_spanned_by(
                    dep,
                    format!(
                        "step `{dep}` cannot wait on itself: `after({dep})` is a cycle `{dep} -> {dep}`; \
                         remove it"
                    ),
                );
            } else if j > i {
                match find_cycle(input, i, j) {
                    Some(cycle) => cx.error_spanned_by(
                        dep,
                        format!(
                            "`after(...)` makes a cycle: {} (each step waits on the next); steps \
                             may only wait on steps declared before them",
                            cycle
                                .iter()
                                .map(|&k| format!("`{}`", steps[k].ident))
                                .collect::<Vec<_>>()
                                .join(" -> ")
                        ),
                    ),
                    None => cx.error_spanned_by(
                        dep,
                        format!(
                            "step `{dep}` must be declared before `{}` to be in its `after(...)`: steps \
                             are started and persisted in declaration order; move `{dep}` above `{}`",
                            step.ident, step.ident
                        ),
                    ),
                }
            } else if step.kind() == Some(Kind::Compensatable)
                && let Some(dep_kind @ (Kind::Pivot | Kind::Retriable)) = steps[j].kind()
            {
                cx.error_spanned_by(
                        dep,
                        format!(
                            "compensatable step `{}` cannot wait on `{dep}`, a {}: once the saga is \
                             past its pivot nothing is undone, so a step that waits on it cannot be \
                             compensatable; make `{}` `#[retriable]`",
                            step.ident,
                            dep_kind.noun(),
                            step.ident
                        ),
                    );
            }
        }
    }
}

/// Rule 7 (data flow): `reads(...)` names steps with an output that are guaranteed to have succeeded
/// whenever step `i` starts, so that its action and compensation receive them as plain values.
fn check_reads(cx: &Ctxt, input: &Input<'_>) {
    let steps = input.steps();
    for (i, step) in steps.iter().enumerate() {
        let Some(reads) = &step.attrs.reads else {
            continue;
        };
        let done = guaranteed(input, i);
        let mut listed: Vec<&Ident> = Vec::new();
        for read in &reads.steps {
            if listed.contains(&read) {
                cx.error_spanned_by(
                    read,
                    format!("`{read}` is listed twice in `reads(...)`; keep one"),
                );
                continue;
            }
            listed.push(read);
            let reader = &step.ident;
            let Some(j) = input.index_of(read) else {
                cx.error_spanned_by(
                    read,
                    format!(
                        "no step `{read}` in saga `{}`; `reads(...)` takes variant names of this enum",
                        input.ident
                    ),
                );
                continue;
            };
            if j == i {
                cx.error_spanned_by(
                    read,
                    format!(
                        "step `{reader}` cannot read its own output: its action makes it, and its \
                         compensation receives it as `Option<_>`; remove `{read}` from `reads(...)`"
                    ),
                );
            } else if matches!(steps[j].output, Output::Unit) {
                cx.error_spanned_by(
                    read,
                    format!(
                        "step `{read}` has no output to read (it is a unit variant); give it one, \
                         `{read}(Output)`, or remove it from the `reads(...)` of `{reader}`"
                    ),
                );
            } else if j > i {
                cx.error_spanned_by(
                    read,
                    format!(
                        "step `{reader}` reads the output of `{read}`, which is declared after it: \
                         `{read}` may not have run when `{reader}` or its compensation is called; a step reads \
                         only steps that must succeed before it starts"
                    ),
                );
            } else if !done[j] {
                let mut waits: Vec<String> = dependencies(input, i)
                    .into_iter()
                    .map(|d| steps[d].ident.to_string())
                    .collect();
                waits.push(read.to_string());
                let hint = format!("`#[step(after({}))]`", waits.join(", "));
                cx.error_spanned_by(
                    read,
                    format!(
                        "step `{reader}` reads the output of `{read}`, but `{read}` is not guaranteed \
                         to have succeeded when `{reader}` starts: they may run concurrently. Make \
                         `{reader}` wait on `{read}` with {hint}"
                    ),
                );
            }
        }
    }
}

/// The steps that have succeeded whenever step `i` starts: its dependencies, transitively, and
/// the implicit order around the point of no return (the pivot waits for every compensatable
/// step; a retriable step waits for the pivot, or without one for every compensatable step).
pub fn guaranteed(input: &Input<'_>, i: usize) -> Vec<bool> {
    let steps = input.steps();
    let pivot = steps.iter().position(|s| s.kind() == Some(Kind::Pivot));
    let direct = |k: usize| -> Vec<usize> {
        let mut deps = dependencies(input, k);
        let all_compensatable =
            || (0..steps.len()).filter(|&c| steps[c].kind() == Some(Kind::Compensatable));
        match steps[k].kind() {
            Some(Kind::Pivot) => deps.extend(all_compensatable()),
            Some(Kind::Retriable) => match pivot {
                Some(p) => deps.push(p),
                None => deps.extend(all_compensatable()),
            },
            _ => {}
        }
        deps.retain(|&d| d < k);
        deps
    };
    let mut done = vec![false; steps.len()];
    let mut todo = direct(i);
    while let Some(k) = todo.pop() {
        if !done[k] {
            done[k] = true;
            todo.extend(direct(k));
        }
    }
    done
}

/// The steps whose outputs step `i` reads, in the order of its `reads(...)`.
pub fn reads(input: &Input<'_>, i: usize) -> Vec<usize> {
    match &input.steps()[i].attrs.reads {
        Some(reads) => {
            let mut out: Vec<usize> = Vec::new();
            for r in reads.steps.iter().filter_map(|r| input.index_of(r)) {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            out
        }
        None => Vec::new(),
    }
}

/// The dependencies of step `i` that resolve to a step: explicit `after(...)`, or the step
/// before it.
pub fn dependencies(input: &Input<'_>, i: usize) -> Vec<usize> {
    match &input.steps()[i].attrs.after {
        Some(after) => after
            .steps
            .iter()
            .filter_map(|d| input.index_of(d))
            .collect(),
        None if i > 0 => vec![i - 1],
        None => Vec::new(),
    }
}

/// A path `from -> to -> ... -> from` along dependencies, if waiting on `to` closes a cycle.
fn find_cycle(input: &Input<'_>, from: usize, to: usize) -> Option<Vec<usize>> {
    fn walk(
        input: &Input<'_>,
        at: usize,
        goal: usize,
        path: &mut Vec<usize>,
        seen: &mut [bool],
    ) -> bool {
        path.push(at);
        if at == goal {
            return true;
        }
        if !seen[at] {
            seen[at] = true;
            for dep in dependencies(input, at) {
                if walk(input, dep, goal, path, seen) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    let mut path = vec![from];
    let mut seen = vec![false; input.steps().len()];
    walk(input, to, from, &mut path, &mut seen).then_some(path)
}

/// Per-step timeout and retry values are usable.
fn check_policies(cx: &Ctxt, steps: &[Step<'_>]) {
    for step in steps {
        if let Some(t) = &step.attrs.timeout_ms
            && t.value == 0
        {
            cx.error_at(t.span, "`timeout_ms` must be at least 1");
        }
        let retry = &step.attrs.retry;
        if let Some(m) = &retry.max_attempts
            && m.value == 0
        {
            cx.error_at(
                m.span,
                "`max_attempts` must be at least 1 (the first call counts)",
            );
        }
        if let (Some(initial), Some(max)) = (&retry.initial_ms, &retry.max_ms)
            && initial.value > max.value
        {
            cx.error_at(
                initial.span,
                format!(
                    "`initial_ms = {}` is larger than `max_ms = {}`; the first backoff cannot \
                         exceed its cap",
                    initial.value, max.value
                ),
            );
        }
    }
}

/// Whether `name` can be persisted: 1 to 128 bytes of `[a-z0-9_]`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} bytes long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "`{name}` contains {c:?}, but persisted names use only `a-z`, `0-9` and `_`"
        ));
    }
    Ok(())
}
