//! The operator console at `/console` in a real browser (headless Chromium over WebDriver):
//! a wrong token is refused, sign-in, the counts, the listing refreshing on its own, a stuck
//! saga retried until it finishes, a running saga compensated before its pivot, compensate not
//! offered past the pivot, the definitions. Screenshots of the listing and of a saga's page go
//! to `target/console-screenshots/`.
//!
//! Then, without a browser, the operator surface's secrets and origins: the token from a file
//! and from `SAGA_ADMIN_TOKEN`, the store's URL from `DATABASE_URL`, and the operator API
//! refusing a foreign `Origin` while a client without one still works.

use std::time::Duration;

use acceptance::server::{free_port, run_cli, run_cli_with_env};
use acceptance::{Browser, Checks, Order, Server, ServerOptions, Storage, is_terminal};

const TOKEN: &str = "console-operator-token";

/// Request headers, name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;
const WAIT: Duration = Duration::from_secs(30);

/// The number shown on the count of `status` on the listing.
fn count(browser: &Browser, status: &str) -> Option<u64> {
    browser
        .text(&format!("a[data-status='{status}'] .number"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits until the saga page shows `status`.
fn wait_status(browser: &Browser, status: &str) {
    browser.wait_for(&format!("the saga to show status {status}"), WAIT, |b| {
        b.attr("#status", "data-status").as_deref() == Some(status)
    });
}

/// Waits until `gid` has a terminal status (succeeded, compensated, stuck) over the API.
fn wait_terminal(server: &Server, gid: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(view) = server.api().saga(gid)
            && is_terminal(&view)
        {
            return view["status"].as_str().unwrap_or("").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{gid} is not terminal after {WAIT:?}\n{}",
            server.context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Presses an operator action on the saga page shown and confirms it.
fn press(browser: &Browser, action: &str) {
    browser.click(&format!("a#{action}"));
    browser.wait_exists("#confirm", WAIT);
    browser.click("#confirm");
    browser.wait_exists("#outcome", WAIT);
}

#[test]
fn an_operator_signs_in_retries_a_stuck_saga_and_compensates_a_running_one() {
    // A compensation that fails twice parks its saga (attempt budget 2); so does the pay saga's
    // retriable step.
    let storage = Storage::sqlite();
    let options = |faults: &[&str]| {
        let mut options = ServerOptions::new()
            .env("SAGA_ADMIN_TOKEN", TOKEN)
            .max_attempts(2)
            .retry_ms(50, 200)
            .step_timeout_ms(120_000)
            .saga_deadline_ms(300_000);
        for fault in faults {
            options = options.fault(*fault);
        }
        options
    };
    let mut server = Server::start(
        &storage,
        options(&["order.create_revert:error:2", "order.mark_paid:error:2"]),
    );
    let ok = Order::new("ok");
    assert_eq!(
        server.api().submit_wait(&ok, None).str("status"),
        Some("succeeded")
    );
    let stuck = Order::new("stuck").product(1, 1000);
    assert_eq!(
        server.api().submit_wait(&stuck, None).str("status"),
        Some("stuck")
    );
    assert_eq!(server.api().pay("ok", true).str("status"), Some("stuck"));

    // Every order calls the coupon step: the slow one is the first after a restart, and its
    // call takes a minute. The stuck sagas stay stuck; their faults are gone.
    server.restart(options(&["coupon.use:delay_ms=60000:1"]));
    let api = server.api();
    let base = format!("{}/console", server.url());
    let slow = Order::new("slow").coupon(101);
    assert_eq!(api.submit(&slow).status, 202);
    let deadline = std::time::Instant::now() + WAIT;
    while !api.saga(&slow.gid()).is_some_and(|view| {
        view["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|s| s["name"] == "coupon_use" && s["attempts"] == 1)
        })
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow order never called its coupon step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let browser = Browser::start(1280, 1300);

    // A wrong token is refused, with the form again; the right one signs in.
    browser.goto(&base);
    browser.wait_exists("#token", WAIT);
    browser.fill("#token", "not-the-token");
    browser.click("#sign-in");
    browser.wait_text("#sign-in-refused", WAIT, |t| {
        t.contains("not the operator token")
    });
    assert!(!browser.exists("#counts"), "a wrong token shows no sagas");
    browser.fill("#token", TOKEN);
    browser.click("#sign-in");
    browser.wait_exists("#counts", WAIT);

    // The counts: one succeeded, two stuck (standing out), one running.
    browser.wait_for("the counts of every saga", WAIT, |b| {
        count(b, "succeeded") == Some(1)
            && count(b, "stuck") == Some(2)
            && count(b, "running") == Some(1)
    });
    assert!(
        browser.exists("li.count.status-stuck.alert"),
        "stuck sagas stand out"
    );
    assert_eq!(browser.count("tr.stuck"), 2, "both stuck rows are marked");

    // The listing refreshes on its own: a saga submitted now shows up without a reload.
    browser.execute("window.notReloaded = true; return null;");
    let late = Order::new("late");
    assert_eq!(
        api.submit_wait(&late, None).str("status"),
        Some("succeeded")
    );
    browser.wait_exists("tr[data-gid='order-late']", WAIT);
    browser.wait_for("the count of succeeded sagas to reach 2", WAIT, |b| {
        count(b, "succeeded") == Some(2)
    });
    let same_page = browser.execute("return window.notReloaded === true;");
    assert_eq!(
        same_page,
        serde_json::json!(true),
        "the page was refreshed in place"
    );
    println!("screenshot: {}", browser.screenshot("sagas").display());

    // The stuck order: its diagram, attempt log, and a retry that lets it finish.
    browser.click("a[href='/console/sagas/order-stuck']");
    wait_status(&browser, "stuck");
    let reason = browser.text("#reason").unwrap_or_default();
    assert!(
        reason.contains("order_create compensation failed 2 times"),
        "{reason}"
    );
    assert!(browser.exists("svg.diagram g.tone-stuck[data-step='order_create']"));
    assert!(browser.exists("svg.diagram g.tone-compensated[data-step='stock_deduct']"));
    assert!(browser.exists("svg.diagram g.tone-skipped[data-step='coupon_use']"));
    assert!(
        browser.count("table.attempts tbody tr") >= 4,
        "the attempt log"
    );
    println!("screenshot: {}", browser.screenshot("saga-stuck").display());
    press(&browser, "retry");
    let outcome = browser.text("#outcome").unwrap_or_default();
    assert!(outcome.contains("Retry accepted"), "{outcome}");
    wait_status(&browser, "compensated");
    assert!(browser.exists("svg.diagram g.tone-compensated[data-step='order_create']"));
    println!(
        "screenshot: {}",
        browser.screenshot("saga-retried").display()
    );

    // The running order, before its pivot: compensate is offered and turns it to compensation.
    browser.goto(&format!("{base}/sagas/order-slow"));
    wait_status(&browser, "running");
    press(&browser, "compensate");
    wait_status(&browser, "compensated");
    let reason = browser.text("#reason").unwrap_or_default();
    assert!(reason.contains("operator"), "{reason}");

    // The pay saga, stuck past its pivot: compensate is not offered, and says why.
    browser.goto(&format!("{base}/sagas/pay-ok"));
    wait_status(&browser, "stuck");
    assert!(
        !browser.is_enabled("#compensate"),
        "compensate past the pivot"
    );
    let why = browser.text("#compensate-why").unwrap_or_default();
    assert!(why.contains("pivot `payment_capture`"), "{why}");
    press(&browser, "retry");
    wait_status(&browser, "succeeded");
    assert!(
        !browser.is_enabled("#retry"),
        "nothing to retry once finished"
    );

    // Every registered saga, with its diagram.
    browser.click("header nav a[href='/console/definitions']");
    browser.wait_exists("section[data-saga='submit_order'] svg.diagram", WAIT);
    assert!(browser.exists("section[data-saga='pay_order'] svg.diagram g.kind-pivot"));
    // The previous release's versions are registered too, to drain their sagas.
    assert_eq!(browser.count("section[data-saga='submit_order']"), 2);
    let first = browser
        .text("section[data-saga='submit_order'] p.facts")
        .unwrap_or_default();
    assert!(first.contains("New sagas start on this version"), "{first}");

    // Signing out ends the session in this browser.
    browser.click("form.sign-out button");
    browser.wait_exists("#token", WAIT);
    browser.goto(&format!("{base}/sagas/order-ok"));
    browser.wait_exists("#token", WAIT);

    let mut checks = Checks::new();
    for (gid, want) in [
        (ok.gid(), "succeeded"),
        (stuck.gid(), "compensated"),
        (slow.gid(), "compensated"),
        ("pay-ok".to_string(), "succeeded"),
    ] {
        let status = wait_terminal(&server, &gid);
        checks.check(status == want, || {
            format!("{gid}: expected {want}, got {status}")
        });
    }
    checks.finish();
    server.assert_no_panics();
}

#[test]
fn the_operator_token_comes_from_a_file_or_the_environment_and_foreign_origins_are_refused() {
    let dir = saga_testkit::temp_dir();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let file = file.display().to_string();
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new().arg("--admin-token-file").arg(&file),
    );
    let api = server.api();
    let retry = "/api/sagas/order-none/retry";
    let bearer = format!("Bearer {TOKEN}");
    let own = server.url().to_string();
    let mut checks = Checks::new();
    let cases: [(&str, Headers, u16); 5] = [
        (
            "the token from the file, no Origin",
            vec![("authorization", &bearer)],
            404,
        ),
        (
            "the token and the server's own Origin",
            vec![("authorization", &bearer), ("origin", &own)],
            404,
        ),
        (
            "the token and a foreign Origin",
            vec![
                ("authorization", &bearer),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            "the token and Origin null",
            vec![("authorization", &bearer), ("origin", "null")],
            403,
        ),
        ("a wrong token", vec![("authorization", "Bearer nope")], 401),
    ];
    for (what, headers, want) in cases {
        let reply = api.request("POST", retry, &headers, None);
        checks.status(what, &reply, &[want]);
        checks.check(reply.has_json_error(), || {
            format!("{what}: no JSON error: {reply}")
        });
    }
    let console = api.get("/console");
    checks.status("GET /console with a token from a file", &console, &[200]);
    let served_html = console
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/html"));
    checks.check(
        served_html && console.text.contains("name=\"token\""),
        || format!("GET /console: expected the sign-in form, got {console}"),
    );
    checks.check(!server.stderr_tail(200).contains(TOKEN), || {
        "the token appears in the server's log".to_string()
    });

    // Without a token the console answers 403, whichever way it is asked.
    let bare = Server::start(&Storage::sqlite(), ServerOptions::new());
    let reply = bare.api().get("/console");
    checks.status("GET /console without --admin-token", &reply, &[403]);
    let reply = bare
        .api()
        .request("GET", "/console", &[("accept", "text/html")], None);
    checks.check(
        reply.status == 403 && reply.text.contains("disabled"),
        || format!("GET /console without --admin-token, as a browser: expected 403, got {reply}"),
    );

    // An empty token file, or a flag and a file at once, stop serve at start.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let data = dir.path().join("data").display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let empty = empty.display().to_string();
    let starts = [
        (
            "an empty token file",
            vec!["--admin-token-file", empty.as_str()],
            "empty",
        ),
        (
            "--admin-token with --admin-token-file",
            vec!["--admin-token", "x", "--admin-token-file", file.as_str()],
            "cannot be used with",
        ),
    ];
    for (what, flags, says) in starts {
        let mut args = vec!["serve", "--listen", &listen, "--data-dir", &data];
        args.extend(flags);
        let (status, _, stderr) = run_cli(&args, WAIT);
        checks.check(status.is_some_and(|s| !s.success()) && stderr.contains(says), || {
            format!("serve with {what}: expected a failed start saying `{says}`, got {status:?}: {stderr}")
        });
    }
    checks.finish();
}

#[test]
fn the_database_url_comes_from_the_environment_without_a_flag() {
    let storage = Storage::postgres();
    let url = storage.database_url().unwrap_or_default().to_string();
    let (status, stdout, stderr) = run_cli_with_env(
        &["seed", "--stock", "1=37"],
        &[("DATABASE_URL", url.as_str())],
        WAIT,
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "seed with DATABASE_URL: {status:?}\n{stdout}\n{stderr}"
    );
    let server = Server::start(&storage, ServerOptions::new());
    assert_eq!(
        server.api().stock(1),
        Some(37),
        "seed wrote to DATABASE_URL's database"
    );
}
