//! One-shot SQL against a PostgreSQL URL through the `psql` client.

use std::process::Command;

/// Runs `sql` with `psql <url> -X -At -v ON_ERROR_STOP=1 -c <sql>` and returns its output rows,
/// each a `|`-separated line. Panics with psql's stderr on failure.
pub fn psql(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new(psql_binary())
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
    if !out.status.success() {
        panic!(
            "psql `{sql}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// The schema that holds `table` in the database at `url`, if any (the engine and each
/// service keep their tables in their own schema).
pub fn schema_of(url: &str, table: &str) -> Option<String> {
    psql(
        url,
        &format!(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = '{table}' \
             ORDER BY table_schema LIMIT 1"
        ),
    )
    .into_iter()
    .next()
}

fn psql_binary() -> &'static str {
    if std::path::Path::new("/usr/bin/psql").is_file() {
        "/usr/bin/psql"
    } else {
        "psql"
    }
}
