//! Overload: 20,000 submits from 2,000 clients at once against `--max-in-flight 1000`. Submits
//! past the limit answer 503 with `Retry-After` and `{"error"}` and create nothing; a refused
//! order sent again later with the same body is accepted; every accepted saga ends terminal
//! within a bounded time, the five invariants hold, and the server's resident memory stays
//! bounded.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use acceptance::outage::{RawConnection, raise_open_files_limit};
use acceptance::{
    Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants, par_map,
    submit_until_accepted,
};

const SUBMITS: usize = 20_000;
const CLIENTS: usize = 2_000;
const MAX_IN_FLIGHT: u64 = 1_000;
/// Refused orders sent again once the load is over.
const RESENT: usize = 200;
/// Refused orders checked to have no saga.
const CHECKED_ABSENT: usize = 500;
/// The resident size the server must stay under while it is overloaded.
const RSS_BOUND_MIB: u64 = 300;
/// The longest an admitted saga may take from submit to terminal.
const LATENCY_BOUND: Duration = Duration::from_secs(30);

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp with milliseconds
/// (`2026-11-25T19:22:00.123Z`).
fn epoch_ms(stamp: &str) -> Option<i64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, ms) = time.split_once('.')?;
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + ms.parse::<i64>().ok()?)
}

#[test]
fn submits_past_max_in_flight_are_refused_and_nothing_accepted_is_lost() {
    let started = Instant::now();
    raise_open_files_limit();
    let storage = Storage::sqlite();
    storage.seed(&[(3, 10_000_000)], &[]);
    let server = Server::start(
        &storage,
        ServerOptions::new()
            .max_in_flight(MAX_IN_FLIGHT)
            .retry_ms(50, 1000),
    );
    let coupons = [101, 102, 103, 104, 105];
    let seeded = Seeded::capture(server.api(), &[1, 2, 3], &coupons);
    let orders = OrderMix::new("overload", &[1, 2, 3, 3, 3, 3, 3, 3, 999])
        .with_coupons(&coupons, 0.05)
        .generate(SUBMITS, &mut rand::rng());
    let rss_before = server.rss_kib().unwrap_or(0);

    let accepted = Mutex::new(Vec::new());
    let refused = Mutex::new(Vec::new());
    let malformed_refusals = Mutex::new(Vec::new());
    let peak_rss = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let load_started = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak_rss.fetch_max(server.rss_kib().unwrap_or(0), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        let clients: Vec<_> = orders
            .chunks(SUBMITS / CLIENTS)
            .map(|mine| {
                let (accepted, refused, malformed) = (&accepted, &refused, &malformed_refusals);
                let url = server.url().to_string();
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        let mut conn = RawConnection::connect(&url, Duration::from_secs(60))
                            .unwrap_or_else(|e| panic!("{e}"));
                        for order in mine {
                            let body = order.body().to_string();
                            let reply = conn
                                .request("POST", "/api/busi/submitOrder", &body)
                                .unwrap_or_else(|e| panic!("submit {}: {e}", order.order_id));
                            match reply.status {
                                200 | 202 => accepted.lock().unwrap().push(order.clone()),
                                503 => {
                                    if !(reply.has_json_error() && reply.retry_after.is_some()) {
                                        malformed.lock().unwrap().push(reply.to_string());
                                    }
                                    refused.lock().unwrap().push(order.clone());
                                }
                                _ => panic!("submit {} answered {reply}", order.order_id),
                            }
                        }
                    })
                    .expect("spawn a client")
            })
            .collect();
        for client in clients {
            client.join().expect("a client does not panic");
        }
        done.store(true, Ordering::Relaxed);
    });
    let load_took = load_started.elapsed();
    let mut accepted = accepted.into_inner().unwrap();
    let refused = refused.into_inner().unwrap();
    let malformed = malformed_refusals.into_inner().unwrap();
    assert!(
        malformed.is_empty(),
        "503s without Retry-After or {{\"error\"}}: {:?}",
        &malformed[..1]
    );
    assert!(
        !refused.is_empty(),
        "no submit was refused: the limit did not bite"
    );
    assert_eq!(accepted.len() + refused.len(), SUBMITS);

    // Refused orders created nothing; sent again with the same body, they are accepted.
    let resent = &refused[..refused.len().min(RESENT)];
    let unsent = &refused[resent.len()..];
    let checked = &unsent[..unsent.len().min(CHECKED_ABSENT)];
    let absent = par_map(checked, 8, |o| server.api().try_saga(&o.gid()));
    for (order, view) in checked.iter().zip(absent) {
        assert!(
            matches!(view, Ok(None)),
            "refused order {} has a saga: {view:?}",
            order.order_id
        );
    }
    let apis = [server.api().clone()];
    for result in par_map(resent, 8, |o| {
        submit_until_accepted(&apis, 0, o, Duration::from_secs(60))
    }) {
        result.unwrap_or_else(|e| panic!("{e}"));
    }
    accepted.extend(resent.iter().cloned());

    let gids: Vec<String> = accepted.iter().map(Order::gid).collect();
    let mut server = server;
    let views = server.wait_all_terminal(&gids, Duration::from_secs(180));
    let rss_after = server.rss_kib().unwrap_or(0);
    let mut latencies: Vec<i64> = views
        .values()
        .filter_map(|v| {
            Some(epoch_ms(v["updated_at"].as_str()?)? - epoch_ms(v["created_at"].as_str()?)?)
        })
        .collect();
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().expect("latencies");
    let summary = check_invariants(server.api(), &seeded, &accepted);
    println!(
        "overload: {SUBMITS} submits from {CLIENTS} clients against --max-in-flight {MAX_IN_FLIGHT} in \
         {load_took:.1?}: {} accepted, {} refused with 503 + Retry-After; {} refused sent again and \
         accepted; submit-to-terminal p99 {p99} ms, max {max} ms; server RSS {} MiB before, peak {} MiB, \
         {} MiB after; {summary}; in {:.1?}",
        accepted.len() - resent.len(),
        refused.len(),
        resent.len(),
        rss_before / 1024,
        peak_rss.load(Ordering::Relaxed) / 1024,
        rss_after / 1024,
        started.elapsed()
    );
    assert!(
        peak_rss.load(Ordering::Relaxed) / 1024 < RSS_BOUND_MIB,
        "peak RSS {} MiB over {RSS_BOUND_MIB} MiB",
        peak_rss.load(Ordering::Relaxed) / 1024
    );
    assert!(
        Duration::from_millis(max as u64) < LATENCY_BOUND,
        "an admitted saga took {max} ms"
    );
    server.assert_no_panics();
}
