//! `demo`: a readable tour of the failures a saga handles: crashes, repeats, rollbacks and late
//! calls. It starts `serve` as a child process on a temporary SQLite data set (so that a crash
//! fault can really kill it), drives it over HTTP and prints, after each scenario, the saga's
//! steps and the rows of the four services.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the data set in this directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// A `serve` child process.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the order-example binary")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .arg("--instance-id")
            .arg("demo")
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("serve did not start: {line}");
        };
        Ok(Server {
            base: base.to_string(),
            child,
        })
    }

    /// Waits for the process to exit by itself (a crash fault).
    fn wait_exit(&mut self, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the server did not crash as the fault said")
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn get(&self, base: &str, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{base}{path}")).send().await?;
        Ok(r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, base: &str, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{base}{path}"))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn wait_terminal(&self, base: &str, gid: &str) -> anyhow::Result<Value> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.get(base, &format!("/api/sagas/{gid}")).await?;
            let s = v["status"].as_str().unwrap_or("");
            if matches!(s, "succeeded" | "compensated" | "stuck") || Instant::now() > until {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn order(id: &str, count: i64, coupon: Option<i64>) -> Value {
    json!({ "order_id": id, "user_id": 1, "product_id": 1, "product_count": count,
            "amount_cents": 1999 * count, "coupon_id": coupon })
}

fn heading(n: usize, title: &str, why: &str) {
    println!("\n== {n}. {title}");
    println!("   {why}");
}

async fn show(
    c: &Client,
    base: &str,
    gid: &str,
    order_id: &str,
    coupon: Option<i64>,
) -> anyhow::Result<Value> {
    let saga = c.get(base, &format!("/api/sagas/{gid}")).await?;
    println!(
        "   saga {gid}: {}{}",
        saga["status"].as_str().unwrap_or("?"),
        saga["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!(
        "   {:<16} {:<12} {:>8} {:>13}  last error",
        "step", "status", "attempts", "compensations"
    );
    for s in saga["steps"].as_array().cloned().unwrap_or_default() {
        println!(
            "   {:<16} {:<12} {:>8} {:>13}  {}",
            s["name"].as_str().unwrap_or(""),
            s["status"].as_str().unwrap_or(""),
            s["attempts"].to_string(),
            s["compensate_attempts"].to_string(),
            s["last_error"].as_str().unwrap_or("-")
        );
    }
    let stock = c.get(base, "/api/stock/1").await?;
    let o = c.get(base, &format!("/api/orders/{order_id}")).await?;
    let p = c.get(base, &format!("/api/payments/{order_id}")).await?;
    let coupon_text = match coupon {
        Some(id) => {
            let cp = c.get(base, &format!("/api/coupons/{id}")).await?;
            format!("coupon {id} used={}", cp["used"])
        }
        None => "no coupon".to_string(),
    };
    println!(
        "   rows: stock of product 1 = {} | order {} | payment {} | {coupon_text}",
        stock["stock"],
        o["status"].as_str().unwrap_or("absent"),
        p["status"].as_str().unwrap_or("absent"),
    );
    Ok(saga)
}

fn expect(saga: &Value, status: &str) -> anyhow::Result<()> {
    if saga["status"] != status {
        bail!("expected the saga to end {status}, got {}", saga["status"]);
    }
    Ok(())
}

/// Runs the tour.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let temp = tempfile::tempdir()?;
    let dir = args.data_dir.unwrap_or_else(|| temp.path().to_path_buf());
    let c = Client {
        http: reqwest::Client::new(),
    };
    println!(
        "Typed sagas: the order system, on a fresh SQLite data set in {}",
        dir.display()
    );
    println!("Seed: product 1 has stock 100, coupons 101-105 belong to user 1.");

    let server = Server::start(&dir, &[])?;
    let base = server.base.clone();

    heading(
        1,
        "A successful order",
        "order, stock, coupon and payment steps all succeed.",
    );
    c.post(
        &base,
        "/api/busi/submitOrder?wait=true",
        &order("d1", 2, Some(101)),
    )
    .await?;
    expect(
        &show(&c, &base, "order-d1", "d1", Some(101)).await?,
        "succeeded",
    )?;

    heading(
        2,
        "Insufficient stock rolls back",
        "stock_deduct fails; its undo is a null compensation (the barrier sees no action), the order is cancelled.",
    );
    c.post(
        &base,
        "/api/busi/submitOrder?wait=true",
        &order("d2", 500, None),
    )
    .await?;
    expect(
        &show(&c, &base, "order-d2", "d2", None).await?,
        "compensated",
    )?;

    heading(
        3,
        "A coupon already used rolls back with real undos",
        "coupon 101 is taken by d1: the stock deducted for d3 is put back and d3 is cancelled.",
    );
    c.post(
        &base,
        "/api/busi/submitOrder?wait=true",
        &order("d3", 3, Some(101)),
    )
    .await?;
    expect(
        &show(&c, &base, "order-d3", "d3", Some(101)).await?,
        "compensated",
    )?;

    heading(
        4,
        "The same order submitted twice",
        "the gid is order-{order_id}: the repeat returns the same saga, stock moves once.",
    );
    let (s1, r1) = c
        .post(
            &base,
            "/api/busi/submitOrder?wait=true",
            &order("d4", 1, None),
        )
        .await?;
    let (s2, r2) = c
        .post(
            &base,
            "/api/busi/submitOrder?wait=true",
            &order("d4", 1, None),
        )
        .await?;
    println!("   first reply {s1} {r1}\n   repeat reply {s2} {r2}");
    expect(&show(&c, &base, "order-d4", "d4", None).await?, "succeeded")?;
    server.stop();

    heading(
        5,
        "A participant crashes after its commit",
        "stock.deduct commits, then the process dies before replying; after a restart the engine \
         retries, the barrier absorbs the repeat: stock moves once.",
    );
    let mut crashing = Server::start(&dir, &["--fault", "stock.deduct:crash_after_commit"])?;
    let base5 = crashing.base.clone();
    let _ = c
        .post(&base5, "/api/busi/submitOrder", &order("d5", 4, None))
        .await;
    crashing.wait_exit(Duration::from_secs(10))?;
    println!("   the process died; restarting it without the fault");
    let server = Server::start(&dir, &["--retry-initial-ms", "50"])?;
    let base = server.base.clone();
    c.wait_terminal(&base, "order-d5").await?;
    expect(&show(&c, &base, "order-d5", "d5", None).await?, "succeeded")?;
    server.stop();

    heading(
        6,
        "A slow stock deduction times out",
        "stock.deduct sleeps 2.5 s, the step timeout is 0.5 s and the deadline 1.5 s: the saga is \
         compensated; when the late deduction arrives the barrier refuses it (hang prevention).",
    );
    let server = Server::start(
        &dir,
        &[
            "--fault",
            "stock.deduct:delay_ms=2500:3",
            "--step-timeout-ms",
            "500",
            "--saga-deadline-ms",
            "1500",
            "--retry-initial-ms",
            "50",
        ],
    )?;
    let base = server.base.clone();
    c.post(
        &base,
        "/api/busi/submitOrder?wait=true",
        &order("d6", 5, None),
    )
    .await?;
    c.wait_terminal(&base, "order-d6").await?;
    let before = c.get(&base, "/api/stock/1").await?["stock"].clone();
    println!("   waiting for the late deductions to arrive ...");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    expect(
        &show(&c, &base, "order-d6", "d6", None).await?,
        "compensated",
    )?;
    let after = c.get(&base, "/api/stock/1").await?["stock"].clone();
    println!("   stock before the late arrivals {before}, after {after}: unchanged");
    if before != after {
        bail!("a late deduction changed the stock");
    }
    server.stop();

    heading(
        7,
        "Paying an order: a pivot and a retriable step",
        "payment_capture is the go/no-go step; order_mark_paid can only be retried (here it fails twice first).",
    );
    let server = Server::start(
        &dir,
        &[
            "--fault",
            "order.mark_paid:error:2",
            "--retry-initial-ms",
            "50",
        ],
    )?;
    let base = server.base.clone();
    c.post(
        &base,
        "/api/busi/payOrder?wait=true",
        &json!({ "order_id": "d1" }),
    )
    .await?;
    c.wait_terminal(&base, "pay-d1").await?;
    expect(
        &show(&c, &base, "pay-d1", "d1", Some(101)).await?,
        "succeeded",
    )?;
    server.stop();

    println!(
        "\nAll scenarios behaved as promised, in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
