//! Many clients and hostile ones: 5,000 `submitOrder?wait=true` clients connected at once
//! (each saga's first call fails and is retried 5 to 10 s later, so that every client is still
//! waiting when the last one has sent its request), then 1,000 slow-loris connections that
//! dribble their headers and 100 that dribble their bodies. Throughout, `/healthz` answers
//! within a second; the waiting clients cost little memory each; every one of them gets its
//! saga's terminal status; the slow connections are cut by the server's deadlines.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::outage::{HealthWatch, RawConnection, raise_open_files_limit};
use acceptance::{Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants};

const WAITERS: usize = 5_000;
const SLOW_HEADERS: usize = 1_000;
const SLOW_BODIES: usize = 100;
/// Longer than the server's header and body deadlines (10 s each).
const DRIBBLE_FOR: Duration = Duration::from_secs(13);
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// What one waiting client may cost the server, at most.
const KIB_PER_WAITER: u64 = 64;

#[test]
fn thousands_of_waiting_and_slow_clients_do_not_starve_a_probe() {
    let started = Instant::now();
    let files = raise_open_files_limit();
    assert!(
        files as usize > WAITERS + SLOW_HEADERS + SLOW_BODIES + 500,
        "the open-files limit {files} is too low for this test"
    );
    let storage = Storage::sqlite();
    storage.seed(&[(3, 10_000_000)], &[]);
    // Every saga's first call fails and is retried 5 to 10 s later: the clients wait.
    let options = ServerOptions::new()
        .fault(format!("order.create:error:{WAITERS}"))
        .retry_ms(10_000, 10_000);
    let mut server = Server::start(&storage, options);
    let seeded = Seeded::capture(server.api(), &[3], &[]);
    let orders = OrderMix::new("waiter", &[3]).generate(WAITERS, &mut rand::rng());
    let watch = HealthWatch::start(server.api());
    let rss_before = server.rss_kib().unwrap_or(0);

    let mut waiters: Vec<(RawConnection, &Order)> = orders
        .iter()
        .map(|order| {
            let conn = RawConnection::connect(server.url(), Duration::from_secs(90))
                .unwrap_or_else(|e| panic!("{e}"));
            (conn, order)
        })
        .collect();
    let sending = Instant::now();
    for (conn, order) in &mut waiters {
        conn.send(
            "POST",
            "/api/busi/submitOrder?wait=true&timeout_ms=60000",
            &order.body().to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let sent_in = sending.elapsed();
    // Once every request is in, look at what the waiting clients cost.
    assert!(
        acceptance::outage::eventually(Duration::from_secs(20), || {
            server.open_files().unwrap_or(0) >= WAITERS
        }),
        "the server never had {WAITERS} connections open: {:?}",
        server.open_files()
    );
    let open_files = server.open_files().unwrap_or(0);
    let rss_all_waiting = server.rss_kib().unwrap_or(0);
    let answered_early = waiters
        .iter_mut()
        .map(|(conn, _)| conn.has_reply_waiting())
        .filter(|&answered| answered)
        .count();
    let kib_each = rss_all_waiting.saturating_sub(rss_before) / WAITERS as u64;

    let mut statuses = std::collections::BTreeMap::new();
    for (conn, order) in &mut waiters {
        let reply = conn
            .read_reply()
            .unwrap_or_else(|e| panic!("waiting client of {}: {e}", order.order_id));
        assert_eq!(reply.status, 200, "{} got {reply}", order.order_id);
        *statuses
            .entry(reply.str("status").unwrap_or("?").to_string())
            .or_insert(0usize) += 1;
    }
    let all_answered_in = sending.elapsed();
    drop(waiters);

    // Slow clients: headers a byte a second, bodies a byte a second.
    let mut slow_headers: Vec<RawConnection> = (0..SLOW_HEADERS)
        .map(|_| {
            let mut conn = RawConnection::connect(server.url(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{e}"));
            conn.write(b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-slow: ")
                .unwrap_or_else(|e| panic!("{e}"));
            conn
        })
        .collect();
    let mut slow_bodies: Vec<RawConnection> = (0..SLOW_BODIES)
        .map(|i| {
            let mut conn = RawConnection::connect(server.url(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{e}"));
            let head = format!(
                "POST /api/busi/submitOrder HTTP/1.1\r\nhost: slow\r\ncontent-type: application/json\r\n\
                 content-length: 200\r\n\r\n{{\"order_id\":\"slow-{i}\""
            );
            conn.write(head.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            conn
        })
        .collect();
    let dribbling = Instant::now();
    let mut cut_headers = vec![false; SLOW_HEADERS];
    while dribbling.elapsed() < DRIBBLE_FOR {
        for (conn, cut) in slow_headers.iter_mut().zip(cut_headers.iter_mut()) {
            if !*cut && conn.write(b"a").is_err() {
                *cut = true;
            }
        }
        for conn in &mut slow_bodies {
            let _ = conn.write(b" ");
        }
        thread::sleep(Duration::from_secs(1));
    }
    let headers_cut = slow_headers
        .iter_mut()
        .zip(&cut_headers)
        .map(|(conn, cut)| *cut || conn.is_closed_by_peer(Duration::from_millis(200)))
        .filter(|&cut| cut)
        .count();
    let bodies_timed_out = slow_bodies
        .iter_mut()
        .map(|conn| {
            conn.read_reply()
                .is_ok_and(|r| r.status == 408 && r.has_json_error())
        })
        .filter(|&timed_out| timed_out)
        .count();
    drop(slow_headers);
    drop(slow_bodies);

    let samples = watch.stop();
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    let unanswered = samples.iter().filter(|s| s.status != Some(200)).count();
    let gids: Vec<String> = orders.iter().map(Order::gid).collect();
    server.wait_all_terminal(&gids, Duration::from_secs(60));
    let summary = check_invariants(server.api(), &seeded, &orders);
    println!(
        "many clients: {WAITERS} ?wait=true clients sent in {sent_in:.1?}, {open_files} files open \
         at the server, {answered_early} answered before all were in; RSS {} MiB before, {} MiB with \
         all waiting ({kib_each} KiB a client); all answered in {all_answered_in:.1?} ({statuses:?}); \
         {SLOW_HEADERS} slow-header connections: {headers_cut} cut; {SLOW_BODIES} slow bodies: \
         {bodies_timed_out} answered 408; /healthz {} probes, slowest {slowest:.0?}, {unanswered} \
         not 200; {summary}; in {:.1?}",
        rss_before / 1024,
        rss_all_waiting / 1024,
        samples.len(),
        started.elapsed()
    );
    assert!(
        answered_early < WAITERS / 10,
        "{answered_early} clients were answered before all {WAITERS} were connected"
    );
    assert!(
        kib_each <= KIB_PER_WAITER,
        "a waiting client costs {kib_each} KiB"
    );
    assert_eq!(
        headers_cut, SLOW_HEADERS,
        "slow-header connections left open"
    );
    assert_eq!(
        bodies_timed_out, SLOW_BODIES,
        "slow bodies not answered 408"
    );
    let problems: Vec<String> = samples
        .iter()
        .filter(|s| s.took >= PROBE_BOUND || s.problem.is_some())
        .map(|s| {
            format!(
                "at {:.1?}: {:?} in {:.0?}",
                s.at - started,
                s.problem,
                s.took
            )
        })
        .collect();
    assert!(
        slowest < PROBE_BOUND && unanswered == 0,
        "a probe took {slowest:?} ({unanswered} not answered 200):\n  {}",
        problems.join("\n  ")
    );
    server.assert_no_panics();
}
