//! Every participant call stalls: each `stockDeduct` takes 2 s while 600 clients keep submitting
//! for 8 s against `--max-in-flight 300`. The engine's step calls (one connection each way, in
//! this one process) and its memory stay bounded by the limit, not by the offered load; the
//! submits past it are refused with 503, and every accepted saga ends terminal with the
//! invariants holding.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use acceptance::outage::{RawConnection, raise_open_files_limit};
use acceptance::{Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants};

const CLIENTS: usize = 600;
const MAX_IN_FLIGHT: usize = 300;
const LOAD_FOR: Duration = Duration::from_secs(8);
/// Files the server may have open beyond one per client and two per saga in flight: its
/// databases, pools, listener and logs.
const FILES_SLACK: usize = 200;
const RSS_BOUND_MIB: u64 = 200;

#[test]
fn stalled_participants_keep_the_engine_bounded() {
    let started = Instant::now();
    raise_open_files_limit();
    let storage = Storage::sqlite();
    storage.seed(&[(3, 10_000_000)], &[]);
    let mut server = Server::start(
        &storage,
        ServerOptions::new()
            .max_in_flight(MAX_IN_FLIGHT as u64)
            .fault("stock.deduct:delay_ms=2000:1000000"),
    );
    let seeded = Seeded::capture(server.api(), &[3], &[]);
    let accepted = Mutex::new(Vec::new());
    let refused = AtomicUsize::new(0);
    let peak_files = AtomicUsize::new(0);
    let peak_rss = std::sync::atomic::AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak_files.fetch_max(server.open_files().unwrap_or(0), Ordering::Relaxed);
                peak_rss.fetch_max(server.rss_kib().unwrap_or(0), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (accepted, refused, stop, next) = (&accepted, &refused, &stop, &next);
                let url = server.url().to_string();
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        let mut conn = RawConnection::connect(&url, Duration::from_secs(30))
                            .unwrap_or_else(|e| panic!("{e}"));
                        let mut rng = rand::rng();
                        while !stop.load(Ordering::Relaxed) {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            let order = OrderMix::new(&format!("stall{n}"), &[3])
                                .generate(1, &mut rng)
                                .remove(0);
                            let reply = conn
                                .request("POST", "/api/busi/submitOrder", &order.body().to_string())
                                .unwrap_or_else(|e| panic!("submit {}: {e}", order.order_id));
                            match reply.status {
                                200 | 202 => accepted.lock().unwrap().push(order),
                                503 => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    // As a client would: wait before the next one.
                                    thread::sleep(Duration::from_millis(100));
                                }
                                _ => panic!("submit {} answered {reply}", order.order_id),
                            }
                        }
                    })
                    .expect("spawn a client")
            })
            .collect();
        thread::sleep(LOAD_FOR);
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("a client does not panic");
        }
        sampler.join().expect("the sampler does not panic");
    });
    let accepted: Vec<Order> = accepted.into_inner().unwrap();
    let refused = refused.into_inner();
    let gids: Vec<String> = accepted.iter().map(Order::gid).collect();
    let drain = Instant::now();
    server.wait_all_terminal(&gids, Duration::from_secs(120));
    let drained_in = drain.elapsed();
    let summary = check_invariants(server.api(), &seeded, &accepted);
    let peak_files = peak_files.into_inner();
    let peak_rss = peak_rss.into_inner() / 1024;
    println!(
        "stalled participants: {CLIENTS} clients for {LOAD_FOR:?} against --max-in-flight \
         {MAX_IN_FLIGHT}, every stock call 2 s: {} accepted, {refused} refused with 503; server \
         peak {peak_files} open files, peak RSS {peak_rss} MiB; drained {drained_in:.1?} after; \
         {summary}; in {:.1?}",
        accepted.len(),
        started.elapsed()
    );
    assert!(
        refused > 0,
        "no submit was refused: the load did not reach the limit"
    );
    assert!(
        peak_files <= CLIENTS + 2 * MAX_IN_FLIGHT + FILES_SLACK,
        "{peak_files} files open: more than the clients and the sagas in flight explain"
    );
    assert!(peak_rss < RSS_BOUND_MIB, "peak RSS {peak_rss} MiB");
    server.assert_no_panics();
}
