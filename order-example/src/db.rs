//! The four participant databases: one SQLite file each under `--data-dir`, or one schema each
//! in the PostgreSQL database of `--database-url`. Business tables come from embedded
//! migrations; a fresh data set is seeded once.

use std::path::{Path, PathBuf};

use saga_core::store::{self, Store, StoreError};

/// A participant's database.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite file.
    Sqlite(sqlx::SqlitePool),
    /// A schema in a PostgreSQL database.
    Postgres(sqlx::PgPool),
}

/// The four services' databases.
#[derive(Clone, Debug)]
pub struct Services {
    /// Orders.
    pub order: Db,
    /// Stock.
    pub stock: Db,
    /// Coupons.
    pub coupon: Db,
    /// Payments.
    pub payment: Db,
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum Location {
    /// SQLite files in this directory.
    Dir(PathBuf),
    /// A PostgreSQL database.
    Url(String),
}

/// The seed of a fresh data set: product 1 with stock 100, product 2 with stock 200, coupons
/// 101 to 105 owned by user 1, unused.
pub const DEFAULT_STOCK: [(i64, i64); 2] = [(1, 100), (2, 200)];
/// Default coupons `(coupon_id, user_id)`.
pub const DEFAULT_COUPONS: [(i64, i64); 5] = [(101, 1), (102, 1), (103, 1), (104, 1), (105, 1)];

fn migrator(service: &str) -> sqlx::migrate::Migrator {
    let mut m = match service {
        "orders" => sqlx::migrate!("./migrations/order"),
        "stock" => sqlx::migrate!("./migrations/stock"),
        "coupons" => sqlx::migrate!("./migrations/coupon"),
        _ => sqlx::migrate!("./migrations/payment"),
    };
    m.dangerous_set_table_name("_order_example_migrations");
    m
}

fn sqlite_file(dir: &Path, part: &str) -> PathBuf {
    let name = match part {
        "orders" => "order.db",
        "stock" => "stock.db",
        "coupons" => "coupon.db",
        "payments" => "payment.db",
        _ => "saga.db",
    };
    dir.join(name)
}

async fn open_service(loc: &Location, part: &str) -> anyhow::Result<Db> {
    let db = match loc {
        Location::Dir(dir) => {
            let pool = store::sqlite::open_pool(&sqlite_file(dir, part), true, 1).await?;
            migrator(part).run(&pool).await?;
            saga_core::barrier::migrate_sqlite(&pool).await?;
            Db::Sqlite(pool)
        }
        Location::Url(url) => {
            let pool = store::postgres::open_pool(url, Some(part), 16).await?;
            migrator(part).run(&pool).await?;
            saga_core::barrier::migrate_postgres(&pool).await?;
            Db::Postgres(pool)
        }
    };
    Ok(db)
}

/// Opens (creating and migrating if needed) the four services' databases and seeds a fresh
/// data set.
pub async fn open_services(loc: &Location) -> anyhow::Result<Services> {
    if let Location::Dir(dir) = loc {
        std::fs::create_dir_all(dir)?;
    }
    let services = Services {
        order: open_service(loc, "orders").await?,
        stock: open_service(loc, "stock").await?,
        coupon: open_service(loc, "coupons").await?,
        payment: open_service(loc, "payments").await?,
    };
    seed_if_fresh(&services).await?;
    Ok(services)
}

/// Opens the engine's store.
pub async fn open_store(loc: &Location) -> Result<Store, StoreError> {
    match loc {
        Location::Dir(dir) => {
            Store::sqlite(
                sqlite_file(dir, "saga"),
                store::sqlite::SqliteOptions::default(),
            )
            .await
        }
        Location::Url(url) => Store::postgres(url, Some("saga"), 16).await,
    }
}

/// Seeds the default data set unless it was seeded before. The marker row and the seed commit
/// together, so concurrent first starts seed once.
async fn seed_if_fresh(s: &Services) -> anyhow::Result<()> {
    let fresh = match &s.stock {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let fresh =
                sqlx::query("INSERT INTO seed_marker (id) VALUES (1) ON CONFLICT DO NOTHING")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if fresh {
                for (id, n) in DEFAULT_STOCK {
                    set_stock_sqlite(&mut tx, id, n).await?;
                }
            }
            tx.commit().await?;
            fresh
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let fresh =
                sqlx::query("INSERT INTO seed_marker (id) VALUES (1) ON CONFLICT DO NOTHING")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if fresh {
                for (id, n) in DEFAULT_STOCK {
                    set_stock_pg(&mut tx, id, n).await?;
                }
            }
            tx.commit().await?;
            fresh
        }
    };
    if fresh {
        for (id, user) in DEFAULT_COUPONS {
            set_coupon(&s.coupon, id, user).await?;
        }
        tracing::info!("seeded a fresh data set");
    }
    Ok(())
}

const UPSERT_STOCK: &str = "INSERT INTO stock (product_id, stock) VALUES ($1, $2) ON CONFLICT (product_id) DO UPDATE SET stock = excluded.stock";
const UPSERT_COUPON: &str = "INSERT INTO coupons (coupon_id, user_id, used, order_id) VALUES ($1, $2, 0, NULL) ON CONFLICT (coupon_id) DO UPDATE SET user_id = excluded.user_id, used = 0, order_id = NULL";

async fn set_stock_sqlite(conn: &mut sqlx::SqliteConnection, id: i64, n: i64) -> sqlx::Result<()> {
    sqlx::query(UPSERT_STOCK)
        .bind(id)
        .bind(n)
        .execute(conn)
        .await?;
    Ok(())
}

async fn set_stock_pg(conn: &mut sqlx::PgConnection, id: i64, n: i64) -> sqlx::Result<()> {
    sqlx::query(UPSERT_STOCK)
        .bind(id)
        .bind(n)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets a product's stock (the `seed` command).
pub async fn set_stock(db: &Db, id: i64, n: i64) -> sqlx::Result<()> {
    match db {
        Db::Sqlite(pool) => set_stock_sqlite(&mut *pool.acquire().await?, id, n).await,
        Db::Postgres(pool) => set_stock_pg(&mut *pool.acquire().await?, id, n).await,
    }
}

/// Sets a coupon's owner and marks it unused (the `seed` command).
pub async fn set_coupon(db: &Db, id: i64, user: i64) -> sqlx::Result<()> {
    match db {
        Db::Sqlite(pool) => {
            sqlx::query(UPSERT_COUPON)
                .bind(id)
                .bind(user)
                .execute(pool)
                .await?;
        }
        Db::Postgres(pool) => {
            sqlx::query(UPSERT_COUPON)
                .bind(id)
                .bind(user)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}
