//! Black-box acceptance and fault harness for the `order-example` binary.
//!
//! Everything here drives the binary through the public contract of docs/contract.md only:
//! its command line, its HTTP API (the console through a real browser) and, for the
//! multi-instance test, the engine's `saga_attempt` table read with `psql`. Nothing links
//! against the order system itself.
//!
//! - [`binary`]: builds `order-example` once per test process and finds it.
//! - [`server`]: [`Storage`] (a SQLite data directory or a PostgreSQL database), [`Server`]
//!   (a running `serve` process: start, SIGKILL, restart) and [`ServerOptions`] (its flags).
//! - [`api`]: [`Api`], a small blocking HTTP client for the contract's endpoints.
//! - [`browser`]: [`Browser`], a headless Chromium driven over WebDriver, for the console.
//! - [`order`]: [`Order`], the submitOrder body, and [`OrderMix`], a random order generator.
//! - [`invariants`]: [`wait_all_terminal`] and [`check_invariants`], the five invariants of the
//!   contract checked through HTTP.
//! - [`checks`]: [`Checks`], a collector that reports every contract mismatch of a test at once.
//! - [`load`]: concurrent submitters that survive restarts, and a parallel map.
//! - [`psql`]: one-shot SQL queries against a PostgreSQL URL.
//! - [`otlp`]: [`OtlpReceiver`], an OTLP/HTTP trace receiver for `serve --otlp-endpoint`.
//! - [`outage`]: watching `/healthz`, plain connections for thousands of clients, a tmpfs for a
//!   full disk, SQLite integrity checks.
//!
//! ```no_run
//! use acceptance::{Order, Server, ServerOptions, Storage, Seeded, check_invariants, wait_all_terminal};
//! use std::time::Duration;
//!
//! let storage = Storage::sqlite();
//! let server = Server::start(&storage, ServerOptions::new());
//! let seeded = Seeded::capture(server.api(), &[1], &[101]);
//! let order = Order::new("a1").coupon(101);
//! server.api().submit(&order);
//! wait_all_terminal(server.api(), &[order.gid()], Duration::from_secs(30));
//! check_invariants(server.api(), &seeded, &[order]);
//! ```

pub mod api;
pub mod binary;
pub mod browser;
pub mod checks;
pub mod invariants;
pub mod load;
pub mod order;
pub mod otlp;
pub mod outage;
pub mod psql;
pub mod server;

pub use api::{Api, Reply};
pub use binary::order_example_binary;
pub use browser::Browser;
pub use checks::{Checks, is_rfc3339_utc_millis};
pub use invariants::{
    InvariantSummary, Seeded, TERMINAL_STATUSES, check_invariants, describe_saga,
    invariant_violations, is_terminal, wait_all_terminal, wait_all_terminal_while, wait_for,
};
pub use load::{LoadControl, LoadReport, par_map, run_load, submit_until_accepted};
pub use order::{Order, OrderMix};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use server::{Backend, Server, ServerOptions, Storage};

/// The eight fault points of the order saga's steps and undos (docs/contract.md, "Fault injection").
pub const SUBMIT_FAULT_POINTS: [&str; 8] = [
    "order.create",
    "order.create_revert",
    "stock.deduct",
    "stock.deduct_revert",
    "coupon.use",
    "coupon.use_revert",
    "payment.create",
    "payment.create_revert",
];

/// Generates one `#[test]` per backend from scenario functions taking a [`Backend`]:
/// `backend_tests!(crash_matrix)` defines the tests `crash_matrix::sqlite` and
/// `crash_matrix::postgres`, each calling `crash_matrix(backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn sqlite() {
                    super::$scenario($crate::Backend::Sqlite);
                }

                #[test]
                fn postgres() {
                    super::$scenario($crate::Backend::Postgres);
                }
            }
        )+
    };
}
