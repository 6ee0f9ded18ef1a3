//! Throwaway PostgreSQL databases for the store and service tests.
//!
//! Every test gets its own empty database, so tests run in parallel without seeing each other's
//! tables and need no cleanup. The databases live on one server per test process: the one CI
//! names in `VICINITY_TEST_DATABASE_URL`, else one started here on first use with
//! `scripts/postgres.sh` (the script CI uses too, so both run with the same settings) and stopped
//! by a watchdog when the process ends.
//!
//! A machine without PostgreSQL still runs the rest of each test: [`database`] returns `None`
//! and says once on stderr why. CI sets `VICINITY_TEST_POSTGRES=require` so that a missing
//! server fails the run instead of passing it quietly.
//!
//! A test that takes the server down (an outage) gets a [`PrivateServer`] of its own instead,
//! so that the other tests' databases stay up.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The script that starts and stops the throwaway server, found through the source tree because
/// the tests run from it.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");

/// The admin URL of this process's server, or why there is none. Kept once found, so that one
/// failed start is not repeated by every test.
static SERVER: OnceLock<Result<String, String>> = OnceLock::new();

/// Numbers the databases of this process; with the process id it makes their names unique on a
/// server that several test processes share.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Returns the URL of a new, empty database of its own, or `None` where no PostgreSQL server
/// is available (unless `VICINITY_TEST_POSTGRES=require`, which makes that a panic).
///
/// Each call connects afresh rather than through a shared pool: every `#[tokio::test]` has its
/// own runtime, and a pool's connections die with the runtime that opened them. The databases
/// are not dropped; they go with the throwaway server.
pub async fn database() -> Option<String> {
    // The first call may spend a second or two in initdb; the others wait for it there.
    let server = tokio::task::spawn_blocking(|| SERVER.get_or_init(find_or_start).clone())
        .await
        .expect("starting the PostgreSQL test server panicked. This is a bug.");
    let admin = match server {
        Ok(url) => url,
        Err(why) => return unavailable(&why),
    };
    let mut conn = connect(&admin, 10)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL test server {admin}: {e}"));
    let name = loop {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let create = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")));
        match create.execute(&mut conn).await {
            Ok(_) => break name,
            // Left by an earlier process with the same id on a long-lived server.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => panic!("CREATE DATABASE {name} on {admin}: {e}"),
        }
    };
    let _ = conn.close().await;
    Some(with_database(&admin, &name))
}

/// The server named by `VICINITY_TEST_DATABASE_URL`, else a throwaway one started now, once it
/// answers.
///
/// Checked here, once, so that an unreachable server costs one wait per process rather than
/// one per test.
fn find_or_start() -> Result<String, String> {
    let url = match std::env::var("VICINITY_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start()?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime to reach {url}: {e}"))?;
    rt.block_on(async {
        let conn = connect(&url, 50).await;
        conn.map_err(|e| format!("cannot connect to {url}: {e}"))?
            .close()
            .await
            .map_err(|e| format!("{url}: {e}"))
    })?;
    Ok(url)
}

/// Starts a throwaway server in a new temporary directory and returns its admin URL.
fn start() -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("vicinity-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?
        .keep();
    // Before the start, so that even a half-started server is cleaned up: statics are never
    // dropped, and a killed test process runs no destructor anyway.
    spawn_watchdog(&dir)?;
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("start")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts a detached shell that polls this process once a second and, once it is gone, stops
/// the server in `dir` and removes `dir`.
///
/// A process of its own rather than a thread or an exit hook, because it must also act after a
/// crash or a SIGKILL. Its own process group keeps a Ctrl-C at the terminal from killing it
/// before the server, which `pg_ctl` already puts in a session of its own.
fn spawn_watchdog(dir: &std::path::Path) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done; exec bash "$1" stop "$2""#)
        .arg(std::process::id().to_string())
        .arg(SCRIPT)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the watchdog shell: {e}"))
}

/// Connects, trying up to `tries` times 200 ms apart: a server that CI has just started, or one
/// that is briefly out of connection slots, answers a moment later.
async fn connect(url: &str, tries: u32) -> Result<PgConnection, sqlx::Error> {
    let mut failed = 0;
    loop {
        match PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if failed + 1 >= tries => return Err(e),
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `url` with its database (the URL's path) replaced by `name`, its query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..path])
}

/// Panics under `VICINITY_TEST_POSTGRES=require`; otherwise says (once per process) that the
/// PostgreSQL checks are skipped, and returns `None`.
fn unavailable(why: &str) -> Option<String> {
    if std::env::var("VICINITY_TEST_POSTGRES").as_deref() == Ok("require") {
        panic!("VICINITY_TEST_POSTGRES=require, but no PostgreSQL server is available: {why}");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the stderr handle: eprintln! is captured and hidden for passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the PostgreSQL half of the store and service tests: {}. Install \
             PostgreSQL or set VICINITY_TEST_DATABASE_URL to run it.",
            why.lines().last().unwrap_or("no reason given")
        );
    });
    None
}

/// A PostgreSQL server of one test's own, which the test may stop and start again (on the same
/// port, with the same data) to see how clients ride out an outage. Dropping it stops the
/// server and removes its directory; a watchdog does the same if the test process dies first.
///
/// Its methods block (each runs `scripts/postgres.sh`, a second or so); from async code, call
/// them in `spawn_blocking`.
#[derive(Debug)]
pub struct PrivateServer {
    dir: std::path::PathBuf,
    url: String,
}

impl PrivateServer {
    /// Starts a server in a new temporary directory, or returns `None` where PostgreSQL is not
    /// installed (a panic under `VICINITY_TEST_POSTGRES=require`). It ignores
    /// `VICINITY_TEST_DATABASE_URL`: a shared server must never be stopped.
    pub fn start() -> Option<PrivateServer> {
        let dir = tempfile::Builder::new()
            .prefix("vicinity-pg-private-")
            .tempdir()
            .expect("a temporary directory for the PostgreSQL server")
            .keep();
        // Before the start, as for the shared server: a killed test runs no destructor.
        spawn_watchdog(&dir).unwrap_or_else(|why| panic!("{why}"));
        match script("start", &dir) {
            Ok(url) => Some(PrivateServer { dir, url }),
            Err(why) => {
                let _ = std::fs::remove_dir_all(&dir);
                // None, or the panic that VICINITY_TEST_POSTGRES=require asks for.
                let _ = unavailable(&why);
                None
            }
        }
    }

    /// The admin URL, `postgres://postgres@127.0.0.1:PORT/postgres`; it holds across
    /// [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server as an outage would: clients are disconnected, and what they committed
    /// is kept. Returns once it is down.
    pub fn stop(&self) {
        script("halt", &self.dir).unwrap_or_else(|why| panic!("stopping {}: {why}", self.url));
    }

    /// Starts the stopped server again on its port; returns once it accepts connections.
    pub fn start_again(&self) {
        script("resume", &self.dir)
            .unwrap_or_else(|why| panic!("starting {} again: {why}", self.url));
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = script("stop", &self.dir);
    }
}

/// Runs `scripts/postgres.sh COMMAND DIR`; returns its stdout, or its stderr on failure.
fn script(command: &str, dir: &std::path::Path) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg(command)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        for (url, want) in [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/t_1"),
            ("postgres://u:p@h:5", "postgres://u:p@h:5/t_1"),
            (
                "postgres://h/db?sslmode=disable",
                "postgres://h/t_1?sslmode=disable",
            ),
            ("postgresql://h?user=u", "postgresql://h/t_1?user=u"),
        ] {
            assert_eq!(with_database(url, "t_1"), want, "{url}");
        }
    }

    async fn has_table(url: &str, table: &str) -> bool {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .expect("query")
    }

    #[tokio::test]
    async fn databases_are_distinct_and_usable() {
        let (Some(a), Some(b)) = (database().await, database().await) else {
            return;
        };
        assert_ne!(a, b);
        let mut conn = PgConnection::connect(&a).await.expect("connect");
        sqlx::query("CREATE TABLE only_in_a (x int)")
            .execute(&mut conn)
            .await
            .expect("create table");
        assert!(has_table(&a, "only_in_a").await);
        assert!(!has_table(&b, "only_in_a").await);
    }

    #[test]
    fn parallel_calls_from_many_runtimes_all_succeed() {
        let urls: Vec<Option<String>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        rt.block_on(async {
                            let url = database().await?;
                            let mut conn = PgConnection::connect(&url).await.expect("connect");
                            let one: i32 = sqlx::query_scalar("SELECT 1")
                                .fetch_one(&mut conn)
                                .await
                                .expect("query");
                            assert_eq!(one, 1);
                            Some(url)
                        })
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect()
        });
        let found: Vec<String> = urls.into_iter().flatten().collect();
        if found.is_empty() {
            return;
        }
        assert_eq!(
            found.len(),
            8,
            "some calls found no server while others did"
        );
        let distinct: std::collections::BTreeSet<_> = found.iter().collect();
        assert_eq!(distinct.len(), 8);
    }
}

/// The database a test runs on; see [`on_both_backends`](crate::on_both_backends).
#[derive(Clone, Debug)]
pub enum TestBackend {
    /// An SQLite file in the test's own directory.
    Sqlite,
    /// A fresh database of its own on the test PostgreSQL server, by URL.
    Postgres(String),
}

impl TestBackend {
    /// The store URL: `dir/vicinity.db` for SQLite.
    pub fn url(&self, dir: &std::path::Path) -> String {
        match self {
            TestBackend::Sqlite => format!("sqlite://{}", dir.join("vicinity.db").display()),
            TestBackend::Postgres(url) => url.clone(),
        }
    }
}

/// For each async test function `name(backend)` (its argument built with `From` from a
/// [`TestBackend`]), a module `name` with two tests, `sqlite` and `postgres`, that run it on
/// each backend; the second runs where [`database`] finds a server. Arguments in parentheses
/// after a name go to its `#[tokio::test]`:
///
/// ```ignore
/// on_both_backends!(writes_survive_a_restart, racing_upserts(flavor = "multi_thread"));
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(($($runtime:tt)*))?),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test$(($($runtime)*))?]
                async fn sqlite() {
                    let backend = $crate::testing::postgres::TestBackend::Sqlite;
                    super::$name(::core::convert::From::from(backend)).await
                }

                #[tokio::test$(($($runtime)*))?]
                async fn postgres() {
                    if let Some(url) = $crate::testing::postgres::database().await {
                        let backend = $crate::testing::postgres::TestBackend::Postgres(url);
                        super::$name(::core::convert::From::from(backend)).await
                    }
                }
            }
        )*
    };
}
