//! `order-example bench` as a user runs it: each kind of run prints one JSON document with the
//! machine header and the fields docs/bench.md lists, every saga accounted for; bad flags are
//! refused with a message. Small runs only: the figures themselves belong to the bench, not to
//! the tests.

use std::process::{Command, Output};

use acceptance::{Backend, backend_tests, binary::order_example_binary};
use serde_json::Value;

/// `order-example bench ARGS --json` on `backend` (a cluster of the test kit for PostgreSQL),
/// without the fsync probe's second; its JSON document.
fn bench(backend: Backend, args: &[&str]) -> Value {
    let mut cmd = Command::new(order_example_binary());
    cmd.arg("bench")
        .args(args)
        .args(["--json", "--fsync-seconds", "0.05"]);
    if backend == Backend::Postgres {
        cmd.args(["--backend", "postgres", "--database-url"])
            .arg(saga_testkit::postgres().url());
    }
    let out = cmd.output().expect("order-example runs");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON document ({e}): {}",
            describe(&out)
        )
    })
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn check_machine(report: &Value, args: &[&str]) {
    let m = &report["machine"];
    assert!(
        m["date_utc"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{m}"
    );
    assert!(number(&m["cpus"]) >= 1.0, "{m}");
    assert_eq!(m["cpus"], report["cpus"]);
    assert!(number(&m["fsync_per_second"]) > 0.0, "{m}");
    let command = m["command"].as_str().unwrap();
    for arg in args {
        assert!(
            command.contains(arg),
            "{arg} is not in the command `{command}`"
        );
    }
}

fn end_to_end_rows_carry_cpu_memory_and_store_figures(backend: Backend) {
    let args = ["--orders", "40", "--concurrency", "8"];
    let report = bench(backend, &args);
    check_machine(&report, &args);
    let rows = report["end_to_end"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for row in rows {
        let o = &row["outcomes"];
        assert_eq!(number(&o["succeeded"]), 40.0, "{row}");
        assert!(number(&row["cpu"]["serve_ms"]) >= 0.0, "{row}");
        assert!(number(&row["cpu"]["bench_ms_per_saga"]) >= 0.0, "{row}");
        for p in ["p50_ms", "p95_ms", "p99_ms"] {
            assert!(number(&row["latency"][p]) > 0.0, "{row}");
        }
        let curve: Vec<&str> = row["server_memory"]["during_kib"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point[0].as_str().unwrap())
            .collect();
        assert_eq!(curve, ["10%", "50%", "100%"], "{row}");
    }
    let saga = rows.iter().find(|r| r["mode"] == "saga").unwrap();
    let (commits, writes) = (
        number(&saga["store_commits_per_saga"]),
        number(&saga["store_writes_per_saga"]),
    );
    assert!(commits > 0.0 && commits <= writes, "{saga}");
    let direct = rows.iter().find(|r| r["mode"] == "direct").unwrap();
    assert_eq!(direct["store_writes_per_saga"], Value::Null, "{direct}");
    assert_eq!(report["comparisons"].as_array().unwrap().len(), 1);
}

fn coordinator_runs_each_step_count_on_an_empty_and_a_prefilled_store(backend: Backend) {
    let args = [
        "--coordinator",
        "--orders",
        "60",
        "--steps",
        "2,16",
        "--prefill",
        "150",
    ];
    let report = bench(backend, &args);
    check_machine(&report, &args);
    let rows = report["coordinator"].as_array().unwrap();
    let shapes: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (number(&r["steps"]), number(&r["prefilled"])))
        .collect();
    assert_eq!(
        shapes,
        [(2.0, 0.0), (2.0, 150.0), (16.0, 0.0), (16.0, 150.0)]
    );
    for row in rows {
        assert_eq!(number(&row["outcomes"]["succeeded"]), 60.0, "{row}");
        assert_eq!(row["cpu"]["serve_ms"], Value::Null, "{row}");
        let per_step = number(&row["cpu_us_per_step"]);
        let per_saga = number(&row["cpu"]["bench_ms_per_saga"]);
        let steps = number(&row["steps"]);
        assert!((per_step - per_saga * 1000.0 / steps).abs() < 1e-6, "{row}");
        // Each step is at least one transition, besides the submit.
        assert!(number(&row["writes_per_saga"]) > steps, "{row}");
    }
    let ratios = report["prefill_comparisons"].as_array().unwrap();
    assert_eq!(ratios.len(), 2, "{report}");
    for c in ratios {
        assert_eq!(number(&c["prefilled"]), 150.0);
        assert!(number(&c["ratio"]) > 0.0, "{c}");
    }
}

fn recovery_resumes_every_saga_in_flight(backend: Backend) {
    let args = ["--recovery", "300", "--steps", "8"];
    let report = bench(backend, &args);
    check_machine(&report, &args);
    let runs = report["recovery"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{report}");
    let r = &runs[0];
    assert_eq!(number(&r["sagas"]), 300.0, "{r}");
    assert_eq!(number(&r["steps"]), 8.0, "{r}");
    assert_eq!(number(&r["held_at_kill"]), 300.0, "{r}");
    assert_eq!(number(&r["resumed"]), 300.0, "{r}");
    assert_eq!(number(&r["outcomes"]["succeeded"]), 300.0, "{r}");
    assert_eq!(number(&r["lost"]), 0.0, "{r}");
    let first = number(&r["restart_to_first_step_ms"]);
    let last = number(&r["restart_to_last_finished_ms"]);
    assert!(first >= 0.0 && first <= last, "{r}");
}

backend_tests!(
    end_to_end_rows_carry_cpu_memory_and_store_figures,
    coordinator_runs_each_step_count_on_an_empty_and_a_prefilled_store,
    recovery_resumes_every_saga_in_flight,
);

#[test]
fn the_markdown_report_starts_with_the_machine_and_the_command() {
    let out = Command::new(order_example_binary())
        .args([
            "bench",
            "--coordinator",
            "--orders",
            "20",
            "--fsync-seconds",
            "0",
        ])
        .output()
        .expect("order-example runs");
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Measured "), "{text}");
    assert!(text.contains("fsync not measured"), "{text}");
    assert!(
        text.contains("bench --coordinator --orders 20 --fsync-seconds 0\n```"),
        "{text}"
    );
    assert!(text.contains("### Coordinator only"), "{text}");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--coordinator", "--steps", "3"],
            "no no-op saga of 3 steps",
        ),
        (&["--coordinator", "--steps", "4,4"], "twice"),
        (&["--prefill", "10"], "--coordinator"),
        (&["--steps", "8"], "--coordinator and --recovery"),
        (&["--fsync-seconds=-1", "--coordinator"], "0 or more"),
    ];
    for (args, message) in cases {
        let out = Command::new(order_example_binary())
            .arg("bench")
            .args(args)
            .output()
            .expect("order-example runs");
        assert!(!out.status.success(), "bench {args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "bench {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "bench {args:?}: {stderr}");
    }
}
