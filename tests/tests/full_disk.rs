//! A full disk under load, on SQLite: the data directory lives on a small tmpfs, mostly taken
//! by a filler file made first. Orders are submitted until writes fail (submits answer 503 with
//! `Retry-After`, the log says the disk is full), then the filler is deleted and the load
//! resumes: every refused order is accepted when sent again, every saga ends terminal, the five
//! invariants hold, and `PRAGMA integrity_check` is clean on every database file.
//!
//! Mounting needs root, as CI runs; elsewhere the test prints why it skips. The tmpfs is 48 MiB
//! rather than 16: the five databases' write-ahead logs alone grow to about 4 MiB each before
//! SQLite checkpoints them, so 16 MiB could not hold the system's steady state even once the
//! filler is gone.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use acceptance::outage::{Tmpfs, free_bytes, sqlite_integrity_check};
use acceptance::{
    Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants, par_map,
    submit_until_accepted,
};

const TMPFS_MIB: u64 = 48;
/// Space left free beside the filler: the load fills it within a few hundred orders.
const HEADROOM: u64 = 6 * 1024 * 1024;
const SUBMITTERS: usize = 8;
/// Orders sent before the disk is full, at most.
const MAX_BEFORE_FULL: usize = 6000;
/// Orders sent after space returns.
const AFTER: usize = 300;
const DATABASES: [&str; 5] = ["saga.db", "order.db", "stock.db", "coupon.db", "payment.db"];

fn fill(path: &Path, bytes: u64) {
    let mut file = fs::File::create(path).expect("create the filler");
    let block = vec![0xa5u8; 1024 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if file.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_refuses_writes_then_everything_resumes_intact() {
    let tmpfs = match Tmpfs::mount(TMPFS_MIB) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("full disk: skipped: {reason}");
            return;
        }
    };
    let started = Instant::now();
    let storage = Storage::sqlite_in(tmpfs.path());
    let data = storage.data_dir().expect("SQLite storage").to_path_buf();
    // Compensations refused while the disk is full must not use up their attempts.
    let options = ServerOptions::new().retry_ms(50, 1000).max_attempts(40);
    let mut server = Server::start(&storage, options);
    let seeded = Seeded::capture(server.api(), &[1, 2], &[101, 102, 103, 104, 105]);
    let filler = tmpfs.path().join("filler");
    fill(&filler, free_bytes(tmpfs.path()).saturating_sub(HEADROOM));
    let free_before = free_bytes(tmpfs.path());

    let mut rng = rand::rng();
    let mix = OrderMix::new("disk", &[1, 2, 999]).with_coupons(&[101, 102, 103, 104, 105], 0.2);
    let first = mix.generate(MAX_BEFORE_FULL, &mut rng);
    // Submit in rounds until the store refuses: every order is either accepted or refused.
    let mut accepted: Vec<Order> = Vec::new();
    let mut refused: Vec<Order> = Vec::new();
    for round in first.chunks(SUBMITTERS * 4) {
        let replies = par_map(round, SUBMITTERS, |order| server.api().try_submit(order));
        for (order, reply) in round.iter().zip(replies) {
            match reply {
                Ok(r) if matches!(r.status, 200 | 202) => accepted.push(order.clone()),
                Ok(r) if r.status == 503 => {
                    assert!(r.has_json_error() && r.retry_after.is_some(), "{r}");
                    refused.push(order.clone());
                }
                Ok(r) => panic!(
                    "submit {} answered {r}\n{}",
                    order.order_id,
                    server.context()
                ),
                Err(e) => panic!(
                    "submit {} got no reply: {e}\n{}",
                    order.order_id,
                    server.context()
                ),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "{} orders accepted and the disk never filled (free: {} bytes)",
        accepted.len(),
        free_bytes(tmpfs.path())
    );
    let full_at = Instant::now();
    let stderr = server.stderr();
    assert!(
        stderr.contains("database or disk is full"),
        "the log does not say the disk is full\n{}",
        server.context()
    );
    assert!(
        server.is_running(),
        "the server exited\n{}",
        server.context()
    );

    fs::remove_file(&filler).expect("delete the filler");
    let freed_at = Instant::now();
    let apis = [server.api().clone()];
    let mut first_accepted = None;
    for order in &refused {
        submit_until_accepted(&apis, 0, order, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", server.context()));
        first_accepted.get_or_insert_with(|| freed_at.elapsed());
    }
    let after = OrderMix::new("disk-after", &[1, 2, 999]).generate(AFTER, &mut rng);
    let resumed = par_map(&after, SUBMITTERS, |order| {
        submit_until_accepted(&apis, 0, order, Duration::from_secs(60))
    });
    for result in resumed {
        result.unwrap_or_else(|e| panic!("{e}\n{}", server.context()));
    }
    let orders: Vec<Order> = accepted
        .iter()
        .chain(&refused)
        .chain(&after)
        .cloned()
        .collect();
    let gids: Vec<String> = orders.iter().map(Order::gid).collect();
    server.wait_all_terminal(&gids, Duration::from_secs(120));
    let recovered_in = freed_at.elapsed();
    let summary = check_invariants(server.api(), &seeded, &orders);
    server.assert_no_panics();
    server.kill();
    for name in DATABASES {
        let check = sqlite_integrity_check(&data.join(name));
        assert_eq!(check, "ok", "PRAGMA integrity_check of {name}");
    }
    println!(
        "full disk: {TMPFS_MIB} MiB tmpfs, {free_before} bytes free beside the filler; {} orders \
         accepted before it was full, {} refused with 503 ({:.1?} in); filler deleted, first \
         refused order accepted {:.1?} later, {} + {AFTER} orders terminal {recovered_in:.1?} \
         after; {summary}; integrity_check ok on {} files; in {:.1?}",
        accepted.len(),
        refused.len(),
        full_at - started,
        first_accepted.unwrap_or_default(),
        refused.len(),
        DATABASES.len(),
        started.elapsed()
    );
}
