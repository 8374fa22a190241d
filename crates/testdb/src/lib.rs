#![doc = include_str!("../README.md")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use herald_core::db::run_migrations;
use herald_core::{BackendKind, DatabaseUrl, Db, DbConnection};
use rand::Rng;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated database that lives as long as this value.
pub struct TestDb {
    pub db: Db,
    pub url: DatabaseUrl,
    guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({})", self.url)
    }
}

/// A `HERALD_TEST_*` setting of the loopback mail servers that `scripts/test.sh` starts
/// (`scripts/mail-servers.sh env`); a clear failure without them, never a skipped test.
pub fn mail_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test.sh, which starts the mail servers"
        )
    })
}

/// The server the PostgreSQL tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// `postgres://…/other` from `postgres://…/db`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    pub fn new(kind: BackendKind) -> TestDb {
        match kind {
            BackendKind::Sqlite => Self::sqlite(),
            BackendKind::Postgres => Self::postgres(),
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = DatabaseUrl::Sqlite(dir.path().join("herald.db"));
        let mut conn = url.connect().expect("open sqlite");
        run_migrations(&mut conn).expect("migrate sqlite");
        drop(conn);
        let db = Db::open(&url, 8).expect("sqlite pool");
        TestDb {
            db,
            url,
            guard: Guard::Sqlite(dir),
        }
    }

    pub fn postgres() -> TestDb {
        let admin_url = postgres_admin_url();
        let template = ensure_template(&admin_url);
        let name = format!(
            "herald_test_{}_{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        );
        let mut admin = admin_connection(&admin_url);
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .expect("create test database from template");
        let url = DatabaseUrl::Postgres(with_database(&admin_url, &name));
        let db = Db::open(&url, 8).expect("postgres pool");
        TestDb {
            db,
            url,
            guard: Guard::Postgres { admin_url, name },
        }
    }

    pub fn backend(&self) -> BackendKind {
        self.url.backend()
    }

    /// The URL a child process or a config file can use.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Postgres(url) => url.clone(),
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }

    /// A connection outside the pool.
    pub fn connect(&self) -> DbConnection {
        self.url.connect().expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, name } = &self.guard
            && let Ok(mut admin) = diesel::PgConnection::establish(admin_url)
        {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn admin_connection(admin_url: &str) -> diesel::PgConnection {
    diesel::PgConnection::establish(admin_url).unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at {} ({e}); run the tests with scripts/test.sh, \
             which starts it, or set HERALD_TEST_POSTGRES_URL",
            herald_core::db::redact_url(admin_url)
        )
    })
}

fn migrations_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres")
}

/// The template's name changes whenever a migration file does, so a stale template is never used.
fn template_name() -> String {
    let mut files: Vec<PathBuf> = walk(&migrations_dir());
    files.sort();
    let mut hasher = DefaultHasher::new();
    // The migrations compiled into this binary are the ones that will run: a binary built before
    // a migration was added must not reuse (or create) the template named for the new set.
    {
        use diesel::migration::MigrationSource;
        let embedded =
            MigrationSource::<diesel::pg::Pg>::migrations(&herald_core::db::MIGRATIONS_POSTGRES)
                .expect("embedded migrations");
        for migration in embedded {
            migration.name().to_string().hash(&mut hasher);
        }
    }
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    format!("herald_tpl_{:016x}", hasher.finish())
}

fn walk(dir: &PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[derive(QueryableByName)]
struct TemplateRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    datistemplate: bool,
}

/// Creates and migrates the template once; test processes running in parallel wait on an
/// advisory lock instead of racing.
fn ensure_template(admin_url: &str) -> String {
    let name = template_name();
    let mut admin = admin_connection(admin_url);
    admin
        .batch_execute("SELECT pg_advisory_lock(7271720)")
        .expect("advisory lock");
    let existing: Vec<TemplateRow> =
        diesel::sql_query("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&name)
            .load(&mut admin)
            .expect("look up template");
    let ready = existing.first().is_some_and(|r| r.datistemplate);
    if !ready {
        // A half-made template (a run that died while migrating) is dropped and made again.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop stale template");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create template");
        {
            let url = DatabaseUrl::Postgres(with_database(admin_url, &name));
            let mut conn = url.connect().expect("connect to template");
            run_migrations(&mut conn).expect("migrate template");
        }
        admin
            .batch_execute(&format!("ALTER DATABASE {name} IS_TEMPLATE true"))
            .expect("mark template");
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(7271720)")
        .expect("advisory unlock");
    name
}

/// Postfix's smtp-sink on a free loopback port, answering as `args` say; killed on drop.
pub struct SmtpSink {
    pub port: u16,
    child: std::process::Child,
    dump: tempfile::TempDir,
}

impl SmtpSink {
    // The child is waited for in Drop.
    #[allow(clippy::zombie_processes)]
    pub fn start(port: Option<u16>, args: &[&str]) -> SmtpSink {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .expect("smtp-sink setup")
                .local_addr()
                .expect("smtp-sink setup")
                .port()
        });
        let dump = tempfile::tempdir().expect("smtp-sink setup");
        std::fs::set_permissions(
            dump.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("smtp-sink setup");
        let child = std::process::Command::new(mail_env("HERALD_TEST_SMTP_SINK"))
            // -a: no AUTH offered (smtp-sink would answer AUTH with a 250).
            .args(["-u", "nobody", "-a", "-d"])
            .arg(dump.path().join("%H%M%S."))
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("50")
            .spawn()
            .expect("smtp-sink setup");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return SmtpSink { port, child, dump };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("smtp-sink did not start on {port}");
    }

    /// Every message it accepted, as written to its dump directory.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.dump.path())
            .map(|files| {
                files
                    .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages it accepted that carry `needle`.
    pub fn received(&self, needle: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.contains(needle))
            .count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs each named `async fn(TestDb)` on SQLite and on PostgreSQL, as two tests:
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::TestDb::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::TestDb::postgres()).await
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_swapped_in_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
