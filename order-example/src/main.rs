//! `order-example`: an order system built on saga-core, after DTM's saga example; its public
//! contract is docs/contract.md.
//!
//! `serve` runs the order API, the four participant services and the saga engine in one
//! process; `seed` sets stock and coupons; `demo` tours the failure scenarios; `bench` loads a
//! running system with and without sagas.

mod api;
mod bench;
mod db;
mod demo;
mod direct;
mod faults;
mod listen;
mod model;
mod saga;
#[cfg(test)]
mod saga_checked;
mod server;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An order system (order, stock, coupon and payment services) built on saga-core: every
/// order either completes or is undone, exactly once.
#[derive(Parser, Debug)]
#[command(name = "order-example", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the order API, the four participant services and the saga engine in one process.
    Serve(server::ServeArgs),
    /// Create the data set if it is new, then set stock levels and coupon owners.
    Seed(SeedArgs),
    /// A readable tour of the failure scenarios on a temporary SQLite data set.
    Demo(demo::DemoArgs),
    /// Load a running system with orders, with sagas and without, and compare.
    Bench(bench::BenchArgs),
    /// The engine process of `bench --recovery` (started by the bench).
    #[command(hide = true)]
    BenchEngine(bench::EngineArgs),
}

/// Arguments of `seed`.
#[derive(clap::Args, Debug)]
struct SeedArgs {
    /// Directory of the SQLite files (default ./data).
    #[arg(long, conflicts_with = "database_url")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL; every service gets its own schema. Without this flag and without
    /// --data-dir, the URL in the environment variable DATABASE_URL, when it is set.
    #[arg(long)]
    database_url: Option<String>,
    /// Stock level of a product, `ID=N` (repeatable).
    #[arg(long = "stock", value_parser = parse_stock)]
    stock: Vec<(i64, i64)>,
    /// Owner of a coupon, `ID:USER` (repeatable); the coupon becomes unused.
    #[arg(long = "coupon", value_parser = parse_coupon)]
    coupon: Vec<(i64, i64)>,
}

fn parse_pair(s: &str, sep: char, what: &str) -> Result<(i64, i64), String> {
    let (a, b) = s
        .split_once(sep)
        .ok_or_else(|| format!("expected {what}, got `{s}`"))?;
    let a: i64 = a
        .parse()
        .map_err(|_| format!("`{a}` is not a whole number in `{s}`"))?;
    let b: i64 = b
        .parse()
        .map_err(|_| format!("`{b}` is not a whole number in `{s}`"))?;
    if a <= 0 || b < 0 {
        return Err(format!(
            "ids must be greater than 0 and counts 0 or more in `{s}`"
        ));
    }
    Ok((a, b))
}

fn parse_stock(s: &str) -> Result<(i64, i64), String> {
    parse_pair(s, '=', "ID=N")
}

fn parse_coupon(s: &str) -> Result<(i64, i64), String> {
    let (id, user) = parse_pair(s, ':', "ID:USER")?;
    if user == 0 {
        return Err(format!("user must be greater than 0 in `{s}`"));
    }
    Ok((id, user))
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let location = db::Location::from_flags(args.data_dir, args.database_url)?;
    let services = services::Services::open(&location).await?;
    for (id, n) in &args.stock {
        services::stock::set(&services.stock, *id, *n).await?;
        println!("stock of product {id} set to {n}");
    }
    for (id, user) in &args.coupon {
        services::coupon::set_owner(&services.coupon, *id, *user).await?;
        println!("coupon {id} belongs to user {user}, unused");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => server::serve(args).await,
            Command::Seed(args) => {
                server::init_tracing("warn");
                seed(args).await
            }
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchEngine(args) => bench::engine_child(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
