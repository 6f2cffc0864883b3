//! The two databases a history can live in, behind one small interface, so
//! each query is written once: SQLite and PostgreSQL read the same
//! statements (parameters written `?1` are sent to PostgreSQL as `$1`),
//! values go in and rows come out as [`Val`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use postgres::types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// What a statement could not do.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no, or could not be reached.
    #[error("{}", with_causes(.0))]
    Postgres(#[from] postgres::Error),
    /// A column held another type than the query expects.
    #[error("column {index} is {found}, not {expected}")]
    Column {
        /// 0-based.
        index: usize,
        /// What the code reads.
        expected: &'static str,
        /// What the row has.
        found: &'static str,
    },
    /// The TLS settings for PostgreSQL.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(#[from] waymark_http::tls::TlsConfigError),
    /// The schema migrations.
    #[error("schema migration: {0}")]
    Migration(#[from] refinery_core::Error),
    /// The writer's thread could not start.
    #[error("cannot start the history writer: {0}")]
    Thread(std::io::Error),
}

/// The error and what caused it: the PostgreSQL client's own message is
/// often only "error performing TLS handshake" or "error connecting".
fn with_causes(e: &postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// One value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// Any integer column.
    Int(i64),
    /// A floating-point column.
    Real(f64),
    /// A text column.
    Text(String),
    /// PostgreSQL's BOOLEAN (SQLite keeps 0 and 1).
    Bool(bool),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "NULL",
            Val::Int(_) => "an integer",
            Val::Real(_) => "a real",
            Val::Text(_) => "text",
            Val::Bool(_) => "a boolean",
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<u32> for Val {
    fn from(v: u32) -> Val {
        Val::Int(i64::from(v))
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Val {
        Val::Real(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Real(f) => ValueRef::Real(*f),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Bool(b) => ValueRef::Integer(i64::from(*b)),
        }))
    }
}

impl PgToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // PostgreSQL checks types strictly: an integer goes out as the
        // width the column has.
        match (self, ty) {
            (Val::Null, _) => Ok(IsNull::Yes),
            (Val::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Val::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Val::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Val::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Val::Int(i), _) => i.to_sql(ty, out),
            (Val::Real(f), _) => f.to_sql(ty, out),
            (Val::Text(s), _) => s.to_sql(ty, out),
            (Val::Bool(b), &Type::INT8) => i64::from(*b).to_sql(ty, out),
            (Val::Bool(b), _) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One row of a result.
#[derive(Debug)]
pub struct Row(Vec<Val>);

impl Row {
    fn at(&self, index: usize) -> &Val {
        self.0.get(index).unwrap_or(&Val::Null)
    }

    fn wrong(&self, index: usize, expected: &'static str) -> DbError {
        DbError::Column {
            index,
            expected,
            found: self.at(index).kind(),
        }
    }

    /// An integer (a boolean reads as 0 or 1).
    pub fn int(&self, index: usize) -> Result<i64, DbError> {
        self.opt_int(index)?
            .ok_or_else(|| self.wrong(index, "an integer"))
    }

    /// An integer or NULL.
    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, DbError> {
        match self.at(index) {
            Val::Null => Ok(None),
            Val::Int(i) => Ok(Some(*i)),
            Val::Bool(b) => Ok(Some(i64::from(*b))),
            _ => Err(self.wrong(index, "an integer")),
        }
    }

    /// A whole number that fits a u32 (counts, attempts).
    pub fn u32(&self, index: usize) -> Result<u32, DbError> {
        u32::try_from(self.int(index)?).map_err(|_| self.wrong(index, "a count"))
    }

    /// A real (an integer reads as one).
    pub fn real(&self, index: usize) -> Result<f64, DbError> {
        match self.at(index) {
            Val::Real(f) => Ok(*f),
            Val::Int(i) => Ok(*i as f64),
            _ => Err(self.wrong(index, "a real")),
        }
    }

    /// Text.
    pub fn text(&self, index: usize) -> Result<String, DbError> {
        self.opt_text(index)?
            .ok_or_else(|| self.wrong(index, "text"))
    }

    /// Text or NULL.
    pub fn opt_text(&self, index: usize) -> Result<Option<String>, DbError> {
        match self.at(index) {
            Val::Null => Ok(None),
            Val::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(index, "text")),
        }
    }

    /// A boolean (SQLite's 0 or 1).
    pub fn bool(&self, index: usize) -> Result<bool, DbError> {
        Ok(self.int(index)? != 0)
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    let mut out = Vec::with_capacity(columns);
    for i in 0..columns {
        out.push(match row.get_ref(i)? {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(n) => Val::Int(n),
            ValueRef::Real(f) => Val::Real(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Val::Text(String::from_utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(Row(out))
}

fn postgres_row(row: &postgres::Row) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(f64::from).into(),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.into(),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.into(),
            _ => row.try_get::<_, Option<String>>(i)?.into(),
        };
        out.push(v);
    }
    Ok(Row(out))
}

/// `?N` parameters as PostgreSQL's `$N`.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Where a history is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Postgres),
}

/// A PostgreSQL database: its URL (`postgres://user:password@host:port/db`,
/// `?sslmode=require` for TLS) and the CA that signed its certificate when
/// the system does not trust it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Postgres {
    /// With the password: never shown (see [`Postgres::redacted`]).
    pub url: String,
    /// PEM file with the CA certificate(s) of the server.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Postgres {
    /// The URL without its password, for logs and errors.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "postgres://(an address that does not parse)".into(),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(pg) => f.write_str(&pg.redacted()),
        }
    }
}

/// An open connection.
pub enum Db {
    /// SQLite, one file.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL, with the statements prepared on it so far.
    Postgres {
        /// The session.
        client: Box<postgres::Client>,
        /// By SQL text: the writer sends the same few statements all day.
        prepared: HashMap<String, postgres::Statement>,
    },
}

/// Runs statements: a connection, or a transaction on one.
pub trait Sql {
    /// Runs `sql`; the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError>;
    /// Runs `sql`; the rows it returned.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError>;
    /// The first row, if any.
    fn query_one(&mut self, sql: &str, params: &[Val]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// True on SQLite: for what only one of the two has (index hints).
    fn is_sqlite(&self) -> bool;
}

fn pg_params(params: &[Val]) -> Vec<&(dyn PgToSql + Sync)> {
    params.iter().map(|p| p as &(dyn PgToSql + Sync)).collect()
}

fn sqlite_exec(conn: &rusqlite::Connection, sql: &str, params: &[Val]) -> Result<u64, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Val],
) -> Result<Vec<Row>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        sqlite_row(r, columns)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The statement for `sql`, prepared once per connection.
fn statement<C: postgres::GenericClient>(
    client: &mut C,
    prepared: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement, DbError> {
    if let Some(s) = prepared.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(&dollars(sql))?;
    prepared.insert(sql.to_string(), s.clone());
    Ok(s)
}

impl Sql for Db {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(c) => sqlite_exec(c, sql, params),
            Db::Postgres { client, prepared } => {
                let s = statement(client.as_mut(), prepared, sql)?;
                Ok(client.execute(&s, &pg_params(params))?)
            }
        }
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        match self {
            Db::Sqlite(c) => sqlite_query(c, sql, params),
            Db::Postgres { client, prepared } => {
                let s = statement(client.as_mut(), prepared, sql)?;
                client
                    .query(&s, &pg_params(params))?
                    .iter()
                    .map(postgres_row)
                    .collect()
            }
        }
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }
}

/// A transaction: committed by [`Db::transaction`] when its closure succeeds.
pub enum Tx<'a> {
    /// On SQLite.
    Sqlite(rusqlite::Transaction<'a>),
    /// On PostgreSQL.
    Postgres(
        postgres::Transaction<'a>,
        &'a mut HashMap<String, postgres::Statement>,
    ),
}

impl Sql for Tx<'_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        match self {
            Tx::Sqlite(t) => sqlite_exec(t, sql, params),
            Tx::Postgres(t, prepared) => {
                let s = statement(t, prepared, sql)?;
                Ok(t.execute(&s, &pg_params(params))?)
            }
        }
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        match self {
            Tx::Sqlite(t) => sqlite_query(t, sql, params),
            Tx::Postgres(t, prepared) => {
                let s = statement(t, prepared, sql)?;
                t.query(&s, &pg_params(params))?
                    .iter()
                    .map(postgres_row)
                    .collect()
            }
        }
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Tx::Sqlite(_))
    }
}

/// The schema, one migration per file, the same for both databases. The
/// migrations applied are kept in `waymark_migrations` (refinery's table).
fn migrations() -> Vec<refinery_core::Migration> {
    [
        ("V1__history", include_str!("migrations/V1__history.sql")),
        ("V2__replicas", include_str!("migrations/V2__replicas.sql")),
    ]
    .into_iter()
    .map(|(name, sql)| {
        // The files are part of the binary: a bad name is a build mistake.
        refinery_core::Migration::unapplied(name, sql)
            .unwrap_or_else(|e| panic!("migration {name}: {e}"))
    })
    .collect()
}

/// The newest migration this build knows.
pub fn schema_version() -> i32 {
    migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

const MIGRATIONS_TABLE: &str = "waymark_migrations";

/// The PostgreSQL advisory lock held while migrating ("waymark" in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6179_6d61_726b;

impl Db {
    /// Opens a SQLite file (created if missing).
    pub fn sqlite(path: &Path) -> Result<Db, DbError> {
        Ok(Db::Sqlite(rusqlite::Connection::open(path)?))
    }

    /// Connects to PostgreSQL: TLS when the URL asks for it (`sslmode=require`
    /// or `prefer`), verified against the system's roots and `ca_file`.
    pub fn postgres(pg: &Postgres) -> Result<Db, DbError> {
        use std::str::FromStr;
        let mut config = postgres::Config::from_str(&pg.url)?;
        if config.get_connect_timeout().is_none() {
            // An unreachable server fails the attempt instead of hanging the writer.
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let client = if config.get_ssl_mode() == postgres::config::SslMode::Disable {
            config.connect(postgres::NoTls)?
        } else {
            let mut tls = waymark_http::tls::client_config(pg.ca_file.as_deref())?;
            // That config offers HTTP's protocols; PostgreSQL is none of them.
            tls.alpn_protocols.clear();
            config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))?
        };
        Ok(Db::Postgres {
            client: Box::new(client),
            prepared: HashMap::new(),
        })
    }

    /// Applies the migrations this database has not had yet. Returns the
    /// newest one it had before, when that is newer than this build knows
    /// (then nothing is applied).
    pub fn migrate(&mut self) -> Result<Option<i32>, DbError> {
        if let Db::Postgres { client, .. } = self {
            // Replicas of a fleet start together; refinery takes no lock, and
            // two sessions creating one table at once collide. One at a time.
            client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
            let out = self.migrate_locked();
            if let Db::Postgres { client, .. } = self {
                let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
                if out.is_ok() {
                    unlocked?;
                }
            }
            return out;
        }
        self.migrate_locked()
    }

    fn migrate_locked(&mut self) -> Result<Option<i32>, DbError> {
        let list = migrations();
        let mut runner = refinery_core::Runner::new(&list);
        runner.set_migration_table_name(MIGRATIONS_TABLE);
        use refinery_core::traits::sync::Migrate;
        let newest = match self {
            Db::Sqlite(c) => {
                c.assert_migrations_table(MIGRATIONS_TABLE)?;
                runner.get_last_applied_migration(c)?
            }
            Db::Postgres { client, .. } => {
                client.assert_migrations_table(MIGRATIONS_TABLE)?;
                runner.get_last_applied_migration(client.as_mut())?
            }
        };
        if let Some(m) = newest
            && m.version() > schema_version()
        {
            return Ok(Some(m.version()));
        }
        match self {
            Db::Sqlite(c) => runner.run(c)?,
            Db::Postgres { client, .. } => runner.run(client.as_mut())?,
        };
        Ok(None)
    }

    /// Runs `f` in a transaction: committed when it returns Ok, rolled back
    /// otherwise.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut tx = match self {
            Db::Sqlite(c) => Tx::Sqlite(c.transaction()?),
            Db::Postgres { client, prepared } => Tx::Postgres(client.transaction()?, prepared),
        };
        let out = f(&mut tx)?;
        match tx {
            Tx::Sqlite(t) => t.commit()?,
            Tx::Postgres(t, _) => t.commit()?,
        }
        Ok(out)
    }

    /// The SQLite connection, for what only SQLite has (pragmas).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite(c) => Some(c),
            Db::Postgres { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_passwords() {
        assert_eq!(
            dollars("SELECT ?1 WHERE a = ?2 OR ?2 IS NULL"),
            "SELECT $1 WHERE a = $2 OR $2 IS NULL"
        );
        let pg = Postgres {
            url: "postgres://waymark:s3cret@db.example:5432/history?sslmode=require".into(),
            ca_file: None,
        };
        assert!(!pg.redacted().contains("s3cret"), "{}", pg.redacted());
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(
            !Database::Postgres(pg).to_string().contains("s3cret"),
            "shown without its password"
        );
    }
}
