//! The run history: every attempt's record, in one SQLite file (WAL mode)
//! or in PostgreSQL, written by one thread in batches, readable by
//! `waymark history` and the web UI while `waymark serve` writes.

mod db;

use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use db::{Database, DbError, Postgres};
use db::{Db, Sql, Val};
use waymark_record::{RunRecord, Status};

/// A history store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no, or could not be reached.
    #[error("history store {at}: {source}")]
    Database {
        /// The file, or the database's URL without its password.
        at: String,
        /// Why.
        source: DbError,
    },
    /// A stored record is not valid JSON.
    #[error("history store {at}: a stored record cannot be read: {source}")]
    Record {
        /// Where.
        at: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The spool that keeps records while the database is away.
    #[error("history spool {at}: {source}")]
    Spool {
        /// Its directory.
        at: String,
        /// Why.
        source: Box<crate::sinks::DeliverError>,
    },
    /// The history was written by a newer waymark.
    #[error("history store {at} has schema version {found}; this waymark knows up to {known}")]
    Version {
        /// Where.
        at: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// SQLite files made before the schema was kept by migrations carry their
/// version in `user_version`: 1: runs. 2: exchanges, acks, each run's
/// maintenance window and the summaries the web UI reads. Files still at 1
/// are brought to 2 here, once; from 2 on, the migrations in
/// `store/migrations/` (the same for both databases) take over.
const LEGACY_SQLITE_VERSION: i64 = 2;

/// An open history.
pub struct Store {
    db: RefCell<Db>,
    at: String,
}

/// One stored attempt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The attempt's record.
    pub record: RunRecord,
    /// True for the attempt that decided the run (a pass, or the last try).
    pub final_attempt: bool,
    /// When the run was due (scheduled runs only).
    pub scheduled_at: Option<SystemTime>,
    /// The attempt's recording for a replay (JSON), when its journey's
    /// `keep_exchanges` asked for it.
    pub tape: Option<String>,
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn status_of(s: &str) -> Status {
    Status::ALL
        .into_iter()
        .find(|x| x.as_str() == s)
        .unwrap_or(Status::Error)
}

/// A journey and location as they stand: the latest deciding attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The journey.
    pub journey: String,
    /// The location.
    pub location: String,
    /// Its latest status.
    pub status: Status,
    /// Since when it has had that status.
    pub since: SystemTime,
    /// The latest run.
    pub run_id: String,
    /// Its deciding attempt.
    pub attempt: u32,
    /// When it started.
    pub last: SystemTime,
    /// The maintenance window it ran in.
    pub maintenance: Option<String>,
}

/// A deciding attempt without its record.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The run.
    pub run_id: String,
    /// Its journey.
    pub journey: String,
    /// Where it ran.
    pub location: String,
    /// When it started.
    pub started_at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// How it ended.
    pub status: Status,
    /// The maintenance window it ran in.
    pub maintenance: Option<String>,
}

/// What `waymark history` asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One journey.
    pub journey: Option<String>,
    /// Runs started at or after.
    pub since: Option<SystemTime>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only deciding attempts.
    pub final_only: bool,
    /// Most rows, newest first.
    pub limit: Option<usize>,
    /// Stats per journey and location instead of per journey.
    pub by_location: bool,
}

/// Per-journey figures of `waymark history --stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JourneyStats {
    /// The journey.
    pub journey: String,
    /// The location, when asked per location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Runs (deciding attempts).
    pub runs: u64,
    /// Of which passed.
    pub passed: u64,
    /// passed / runs, 0..1.
    pub availability: f64,
    /// Median run duration, ms.
    pub p50_ms: f64,
    /// 95th percentile run duration, ms.
    pub p95_ms: f64,
    /// Failure spells: first failure to the first pass after it.
    pub incidents: Vec<Incident>,
}

/// One failure spell.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Incident {
    /// `JOURNEY@MS`: the journey and its first failing run's start (Unix
    /// ms), which `POST /api/incidents/{id}/ack` names.
    pub id: String,
    /// First failing run's start (RFC 3339).
    pub started_at: String,
    /// First passing run's start after it; none while still failing.
    pub recovered_at: Option<String>,
    /// recovered_at − started_at, seconds.
    pub time_to_recovery_s: Option<f64>,
    /// Failing runs in the spell.
    pub failed_runs: u64,
    /// When someone acknowledged it.
    pub acknowledged_at: Option<String>,
    /// Who.
    pub acknowledged_by: Option<String>,
    /// acknowledged_at − started_at, seconds.
    pub time_to_acknowledge_s: Option<f64>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Adds a deciding attempt to the daily counts and the latest status.
fn summarise(tx: &mut impl Sql, r: &RunRecord, started: i64) -> Result<(), DbError> {
    let pass = i64::from(r.status == Status::Pass);
    let (runs, passed, held): (i64, i64, i64) = match r.maintenance {
        Some(_) => (0, 0, 1),
        None => (1, pass, 0),
    };
    tx.exec(
        "INSERT INTO daily (journey, location, day, runs, passed, maintenance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (journey, location, day) DO UPDATE SET runs = daily.runs + excluded.runs,
           passed = daily.passed + excluded.passed,
           maintenance = daily.maintenance + excluded.maintenance",
        &[
            (&r.journey).into(),
            (&r.location).into(),
            started.div_euclid(86_400_000).into(),
            runs.into(),
            passed.into(),
            Val::Int(held),
        ],
    )?;
    // The streak goes on while the status stays; an older run than the
    // latest (late from a spool) changes nothing.
    tx.exec(
        "INSERT INTO latest (journey, location, status, since_ms, run_id, attempt, last_ms, maintenance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?7)
         ON CONFLICT (journey, location) DO UPDATE SET
           since_ms = CASE WHEN latest.status = excluded.status THEN latest.since_ms
                      ELSE excluded.since_ms END,
           status = excluded.status, run_id = excluded.run_id, attempt = excluded.attempt,
           last_ms = excluded.last_ms, maintenance = excluded.maintenance
         WHERE excluded.last_ms >= latest.last_ms",
        &[
            (&r.journey).into(),
            (&r.location).into(),
            r.status.as_str().into(),
            started.into(),
            (&r.run_id).into(),
            r.attempt.into(),
            r.maintenance.as_ref().into(),
        ],
    )?;
    Ok(())
}

/// Brings a SQLite file of user_version 1 to 2 (see [`LEGACY_SQLITE_VERSION`]).
fn upgrade_legacy_sqlite(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    // Version 1 kept neither the maintenance column nor the summaries the
    // web UI reads; the migration makes the tables, this fills them.
    c.execute_batch(include_str!("migrations/V1__history.sql"))?;
    c.execute_batch(
        "BEGIN;
         ALTER TABLE runs ADD COLUMN maintenance TEXT;
         INSERT OR REPLACE INTO daily (journey, location, day, runs, passed, maintenance)
           SELECT journey, location, started_at_ms / 86400000, count(*),
                  sum(status = 'pass'), 0
           FROM runs WHERE final = 1 GROUP BY 1, 2, 3;
         INSERT OR REPLACE INTO latest
           (journey, location, status, since_ms, run_id, attempt, last_ms, maintenance)
           SELECT r.journey, r.location, r.status,
             coalesce(
               (SELECT min(x.started_at_ms) FROM runs x
                WHERE x.final = 1 AND x.journey = r.journey AND x.location = r.location
                  AND x.started_at_ms > (SELECT max(y.started_at_ms) FROM runs y
                    WHERE y.final = 1 AND y.journey = r.journey
                      AND y.location = r.location AND y.status != r.status)),
               (SELECT min(z.started_at_ms) FROM runs z
                WHERE z.final = 1 AND z.journey = r.journey AND z.location = r.location)),
             r.run_id, r.attempt, r.started_at_ms, NULL
           FROM runs r
           WHERE r.final = 1 AND r.started_at_ms = (SELECT max(m.started_at_ms) FROM runs m
             WHERE m.final = 1 AND m.journey = r.journey AND m.location = r.location);
         COMMIT;",
    )
}

impl Store {
    /// Opens (creating if needed) the SQLite history at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::connect(&Database::Sqlite(path.to_path_buf()))
    }

    /// Opens the history in `database`, applying the schema migrations it
    /// has not had yet.
    pub fn connect(database: &Database) -> Result<Store, StoreError> {
        let store = Store::reader(database)?;
        let migrated = store.db.borrow_mut().migrate();
        if let Some(found) = migrated.map_err(|e| store.err(e))? {
            return Err(StoreError::Version {
                at: store.at,
                found: i64::from(found),
                known: i64::from(db::schema_version()),
            });
        }
        Ok(store)
    }

    /// Opens the history in `database` without touching its schema: for
    /// readers of a history a writer keeps (the web UI, which opens it for
    /// every request, inside the `waymark serve` that migrated it at start).
    pub fn reader(database: &Database) -> Result<Store, StoreError> {
        let at = database.to_string();
        let err = |source: DbError| StoreError::Database {
            at: at.clone(),
            source,
        };
        let db = match database {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    // If this fails, SQLite's own error below says so more precisely.
                    let _ = std::fs::create_dir_all(dir);
                }
                let db = Db::sqlite(path).map_err(err)?;
                if let Some(c) = db.as_sqlite() {
                    Store::prepare_sqlite(c, &at).map_err(|e| match e {
                        Prep::Db(source) => err(source.into()),
                        Prep::Newer(found) => StoreError::Version {
                            at: at.clone(),
                            found,
                            known: LEGACY_SQLITE_VERSION,
                        },
                    })?;
                }
                db
            }
            Database::Postgres(pg) => Db::postgres(pg).map_err(err)?,
        };
        Ok(Store {
            db: RefCell::new(db),
            at,
        })
    }

    /// SQLite's settings, and files from before the migrations.
    fn prepare_sqlite(c: &rusqlite::Connection, at: &str) -> Result<(), Prep> {
        c.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers (`waymark history`) never block the writer, and a
        // killed process leaves every committed transaction in the file.
        // NORMAL sync loses nothing on a process crash; only a power loss
        // can take the last transactions.
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > LEGACY_SQLITE_VERSION {
            return Err(Prep::Newer(version));
        }
        if version == 1 {
            tracing::info!(
                history = at,
                "history: filling the summaries of a version 1 file"
            );
            upgrade_legacy_sqlite(c)?;
        }
        // Older waymarks read this number; written only when it changes, as
        // the web UI opens the file for every request and a write would wait
        // on the writer's transactions.
        if version != LEGACY_SQLITE_VERSION {
            c.pragma_update(None, "user_version", LEGACY_SQLITE_VERSION)?;
        }
        Ok(())
    }

    fn err(&self, source: DbError) -> StoreError {
        StoreError::Database {
            at: self.at.clone(),
            source,
        }
    }

    fn record_err(&self, source: serde_json::Error) -> StoreError {
        StoreError::Record {
            at: self.at.clone(),
            source,
        }
    }

    fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<db::Row>, StoreError> {
        self.db
            .borrow_mut()
            .query(sql, params)
            .map_err(|e| self.err(e))
    }

    fn exec(&self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        self.db
            .borrow_mut()
            .exec(sql, params)
            .map_err(|e| self.err(e))
    }

    /// Writes `entries` in one transaction: all or none. Writing the same
    /// attempt again (a spool delivering twice) changes nothing.
    pub fn insert(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(entries.len());
        for e in entries {
            let json = serde_json::to_string(&e.record).map_err(|s| self.record_err(s))?;
            rows.push(json);
        }
        let at = self.at.clone();
        self.db
            .get_mut()
            .transaction(|tx| {
                for (e, json) in entries.iter().zip(rows) {
                    let r = &e.record;
                    let started = millis(r.started_at);
                    // A deciding attempt stored again is not counted twice
                    // in the summaries.
                    let counted = tx
                        .query_one(
                            "SELECT final FROM runs WHERE run_id = ?1 AND attempt = ?2",
                            &[(&r.run_id).into(), r.attempt.into()],
                        )?
                        .map(|row| row.bool(0))
                        .transpose()?
                        .unwrap_or(false);
                    if e.final_attempt && !counted {
                        summarise(tx, r, started)?;
                    }
                    tx.exec(
                        "INSERT INTO runs (run_id, attempt, journey, location, started_at_ms,
                         scheduled_at_ms, duration_ms, status, final, error_kind, error_message,
                         record, maintenance)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (run_id, attempt) DO UPDATE SET journey = excluded.journey,
                           location = excluded.location, started_at_ms = excluded.started_at_ms,
                           scheduled_at_ms = excluded.scheduled_at_ms,
                           duration_ms = excluded.duration_ms, status = excluded.status,
                           final = excluded.final, error_kind = excluded.error_kind,
                           error_message = excluded.error_message, record = excluded.record,
                           maintenance = excluded.maintenance",
                        &[
                            (&r.run_id).into(),
                            r.attempt.into(),
                            (&r.journey).into(),
                            (&r.location).into(),
                            started.into(),
                            e.scheduled_at.map(millis).into(),
                            waymark_record::serde_time::as_millis(r.duration).into(),
                            r.status.as_str().into(),
                            e.final_attempt.into(),
                            r.error.as_ref().map(|e| e.kind.as_str()).into(),
                            r.error.as_ref().map(|e| e.message.as_str()).into(),
                            json.into(),
                            r.maintenance.as_ref().into(),
                        ],
                    )?;
                    if let Some(tape) = &e.tape {
                        tx.exec(
                            "INSERT INTO exchanges (run_id, attempt, tape) VALUES (?1, ?2, ?3)
                             ON CONFLICT (run_id, attempt) DO UPDATE SET tape = excluded.tape",
                            &[(&r.run_id).into(), r.attempt.into(), tape.into()],
                        )?;
                    }
                }
                Ok(())
            })
            .map_err(|source| StoreError::Database { at, source })
    }

    /// The recording of `run_id` (the given attempt, or its last one kept).
    pub fn tape(&self, run_id: &str, attempt: Option<u32>) -> Result<Option<String>, StoreError> {
        self.of_attempt(
            "SELECT tape FROM exchanges WHERE run_id = ?1
               AND (CAST(?2 AS BIGINT) IS NULL OR attempt = ?2)
             ORDER BY attempt DESC LIMIT 1",
            run_id,
            attempt,
        )
    }

    /// The one text column `sql` selects for `run_id`'s `attempt` (or its last).
    fn of_attempt(
        &self,
        sql: &str,
        run_id: &str,
        attempt: Option<u32>,
    ) -> Result<Option<String>, StoreError> {
        self.query(sql, &[run_id.into(), attempt.into()])?
            .first()
            .map(|r| r.text(0))
            .transpose()
            .map_err(|e| self.err(e))
    }

    /// Deletes runs started before `before`; returns how many.
    pub fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let before = millis(before);
        self.exec(
            "DELETE FROM exchanges WHERE (run_id, attempt) IN
             (SELECT run_id, attempt FROM runs WHERE started_at_ms < ?1)",
            &[before.into()],
        )?;
        self.exec("DELETE FROM acks WHERE at_ms < ?1", &[before.into()])?;
        self.exec(
            "DELETE FROM daily WHERE day < ?1",
            &[before.div_euclid(86_400_000).into()],
        )?;
        self.exec("DELETE FROM latest WHERE last_ms < ?1", &[before.into()])?;
        let n = self.exec(
            "DELETE FROM runs WHERE started_at_ms < ?1",
            &[before.into()],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Deciding attempts of `journey` at `location` started at or after
    /// `since`, oldest first, without their records.
    pub fn rows(
        &self,
        journey: &str,
        location: &str,
        since: SystemTime,
    ) -> Result<Vec<RunRow>, StoreError> {
        // Without statistics SQLite may take the time index and read a day
        // of every journey's runs; PostgreSQL plans with its statistics.
        let hint = if self.db.borrow().is_sqlite() {
            "INDEXED BY runs_by_journey"
        } else {
            ""
        };
        let sql = format!(
            "SELECT run_id, journey, location, started_at_ms, duration_ms, status, maintenance
             FROM runs {hint}
             WHERE journey = ?1 AND started_at_ms >= ?2 AND final AND location = ?3
             ORDER BY started_at_ms, attempt"
        );
        self.query(
            &sql,
            &[journey.into(), millis(since).into(), location.into()],
        )?
        .iter()
        .map(|r| {
            Ok(RunRow {
                run_id: r.text(0)?,
                journey: r.text(1)?,
                location: r.text(2)?,
                started_at: at_ms(r.int(3)?),
                duration: Duration::from_secs_f64(r.real(4)?.max(0.0) / 1e3),
                status: status_of(&r.text(5)?),
                maintenance: r.opt_text(6)?,
            })
        })
        .collect::<Result<_, DbError>>()
        .map_err(|e| self.err(e))
    }

    /// Every journey and location's latest deciding attempt and the start
    /// of its current streak, by journey and location.
    pub fn latest(&self) -> Result<Vec<Latest>, StoreError> {
        self.query(
            "SELECT journey, location, status, since_ms, run_id, attempt, last_ms, maintenance
             FROM latest ORDER BY journey, location",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(Latest {
                journey: r.text(0)?,
                location: r.text(1)?,
                status: status_of(&r.text(2)?),
                since: at_ms(r.int(3)?),
                run_id: r.text(4)?,
                attempt: r.u32(5)?,
                last: at_ms(r.int(6)?),
                maintenance: r.opt_text(7)?,
            })
        })
        .collect::<Result<_, DbError>>()
        .map_err(|e| self.err(e))
    }

    /// Daily counts of `journey` at `location` from day `from` (days since
    /// 1970, UTC): (day, runs, passed, runs in maintenance); runs in
    /// maintenance are not in `runs`.
    pub fn daily(
        &self,
        journey: &str,
        location: &str,
        from: i64,
    ) -> Result<Vec<(i64, u32, u32, u32)>, StoreError> {
        self.query(
            "SELECT day, runs, passed, maintenance FROM daily
             WHERE journey = ?1 AND location = ?2 AND day >= ?3 ORDER BY day",
            &[journey.into(), location.into(), from.into()],
        )?
        .iter()
        .map(|r| Ok((r.int(0)?, r.u32(1)?, r.u32(2)?, r.u32(3)?)))
        .collect::<Result<_, DbError>>()
        .map_err(|e| self.err(e))
    }

    /// Stored attempts, newest first.
    pub fn list(&self, f: &Filter) -> Result<Vec<Entry>, StoreError> {
        // The journey is compared only when given: `journey = coalesce(?1,
        // journey)` would keep SQLite from its index, a scan of every run.
        let mut sql = String::from(
            "SELECT record, final, scheduled_at_ms FROM runs WHERE started_at_ms >= ?2
             AND status = coalesce(?3, status)",
        );
        sql.push_str(if f.journey.is_some() {
            " AND journey = ?1"
        } else {
            " AND CAST(?1 AS TEXT) IS NULL"
        });
        if f.final_only {
            sql.push_str(" AND final");
        }
        // The run id last, so runs that started in the same millisecond
        // come in one order each time.
        sql.push_str(" ORDER BY started_at_ms DESC, attempt DESC, run_id DESC LIMIT ?4");
        let rows = self.query(
            &sql,
            &[
                f.journey.as_ref().into(),
                f.since.map_or(i64::MIN, millis).into(),
                f.status.map(Status::as_str).into(),
                f.limit
                    .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX))
                    .into(),
            ],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (json, final_attempt, scheduled) =
                (|| Ok::<_, DbError>((row.text(0)?, row.bool(1)?, row.opt_int(2)?)))()
                    .map_err(|e| self.err(e))?;
            let record = serde_json::from_str(&json).map_err(|e| self.record_err(e))?;
            out.push(Entry {
                record,
                final_attempt,
                scheduled_at: scheduled.map(at_ms),
                // Listed without: `Store::tape` reads one when asked.
                tape: None,
            });
        }
        Ok(out)
    }

    /// Per-journey availability, duration percentiles and incidents, over
    /// deciding attempts only (a run that passed on its retry is one pass);
    /// per journey and location with `f.by_location`.
    pub fn stats(&self, f: &Filter) -> Result<Vec<JourneyStats>, StoreError> {
        // A run starts with its first attempt; it ends as its deciding one.
        // The journey is compared only when given, so its index is used.
        let sql = format!(
            "SELECT journey, (SELECT min(a.started_at_ms) FROM runs a WHERE a.run_id = runs.run_id)
             AS first_start, duration_ms, status, location FROM runs
             WHERE final AND {} AND started_at_ms >= ?2 AND maintenance IS NULL
             ORDER BY journey, {}first_start, location, run_id",
            if f.journey.is_some() {
                "journey = ?1"
            } else {
                "CAST(?1 AS TEXT) IS NULL"
            },
            if f.by_location { "location, " } else { "" }
        );
        let rows = self.query(
            &sql,
            &[
                f.journey.as_ref().into(),
                f.since.map_or(i64::MIN, millis).into(),
            ],
        )?;
        let mut out: Vec<JourneyStats> = Vec::new();
        let mut durations: Vec<f64> = Vec::new();
        let mut open: Option<Incident> = None;
        let finish = |s: &mut JourneyStats, d: &mut Vec<f64>, open: &mut Option<Incident>| {
            d.sort_by(f64::total_cmp);
            s.p50_ms = percentile(d, 0.50);
            s.p95_ms = percentile(d, 0.95);
            s.availability = if s.runs == 0 {
                0.0
            } else {
                s.passed as f64 / s.runs as f64
            };
            if let Some(i) = open.take() {
                s.incidents.push(i);
            }
            d.clear();
        };
        for row in rows {
            let (journey, started, duration, status, location) = (|| {
                Ok::<_, DbError>((
                    row.text(0)?,
                    row.int(1)?,
                    row.real(2)?,
                    row.text(3)?,
                    row.text(4)?,
                ))
            })()
            .map_err(|e| self.err(e))?;
            let location = f.by_location.then_some(location);
            if out
                .last()
                .is_none_or(|s| s.journey != journey || s.location != location)
            {
                if let Some(last) = out.last_mut() {
                    finish(last, &mut durations, &mut open);
                }
                out.push(JourneyStats {
                    journey,
                    location,
                    runs: 0,
                    passed: 0,
                    availability: 0.0,
                    p50_ms: 0.0,
                    p95_ms: 0.0,
                    incidents: Vec::new(),
                });
            }
            let Some(s) = out.last_mut() else { continue };
            s.runs += 1;
            durations.push(duration);
            if status == Status::Pass.as_str() {
                s.passed += 1;
                if let Some(mut i) = open.take() {
                    let began = humantime::parse_rfc3339(&i.started_at)
                        .map(millis)
                        .unwrap_or(started);
                    i.recovered_at = Some(rfc3339(started));
                    i.time_to_recovery_s = Some((started - began) as f64 / 1000.0);
                    s.incidents.push(i);
                }
            } else {
                match &mut open {
                    Some(i) => i.failed_runs += 1,
                    None => {
                        open = Some(Incident {
                            id: format!("{}@{started}", s.journey),
                            started_at: rfc3339(started),
                            recovered_at: None,
                            time_to_recovery_s: None,
                            failed_runs: 1,
                            acknowledged_at: None,
                            acknowledged_by: None,
                            time_to_acknowledge_s: None,
                        })
                    }
                }
            }
        }
        if let Some(last) = out.last_mut() {
            finish(last, &mut durations, &mut open);
        }
        self.add_acks(&mut out)?;
        Ok(out)
    }

    fn add_acks(&self, stats: &mut [JourneyStats]) -> Result<(), StoreError> {
        for i in stats.iter_mut().flat_map(|s| s.incidents.iter_mut()) {
            let ack = self
                .query(
                    "SELECT \"by\", at_ms FROM acks WHERE incident = ?1",
                    &[(&i.id).into()],
                )?
                .first()
                .map(|r| Ok::<_, DbError>((r.text(0)?, r.int(1)?)))
                .transpose()
                .map_err(|e| self.err(e))?;
            if let Some((by, at)) = ack {
                let began =
                    i.id.rsplit_once('@')
                        .and_then(|(_, ms)| ms.parse::<i64>().ok())
                        .unwrap_or(at);
                i.acknowledged_at = Some(rfc3339(at));
                i.acknowledged_by = Some(by);
                i.time_to_acknowledge_s = Some((at - began).max(0) as f64 / 1000.0);
            }
        }
        Ok(())
    }

    /// Records that `by` acknowledged the incident `id` at `at` (the first
    /// acknowledgement stands). False when no incident has that id.
    pub fn acknowledge(&self, id: &str, by: &str, at: SystemTime) -> Result<bool, StoreError> {
        let Some((journey, _)) = id.rsplit_once('@') else {
            return Ok(false);
        };
        let stats = self.stats(&Filter {
            journey: Some(journey.to_string()),
            ..Filter::default()
        })?;
        if !stats.iter().flat_map(|s| &s.incidents).any(|i| i.id == id) {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO acks (incident, \"by\", at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (incident) DO NOTHING",
            &[id.into(), by.into(), millis(at).into()],
        )?;
        Ok(true)
    }

    /// SQLite's `PRAGMA integrity_check` says "ok" (PostgreSQL checks its
    /// own pages: always true there).
    pub fn integrity_ok(&self) -> Result<bool, StoreError> {
        let db = self.db.borrow();
        let Some(c) = db.as_sqlite() else {
            return Ok(true);
        };
        let v: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e.into()))?;
        Ok(v == "ok")
    }

    /// How many attempts are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT count(*) FROM runs", &[])?;
        let n = rows
            .first()
            .map_or(Ok(0), |r| r.int(0))
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One stored attempt by id.
    pub fn get(&self, run_id: &str, attempt: u32) -> Result<Option<RunRecord>, StoreError> {
        self.get_attempt(run_id, Some(attempt))
    }

    /// The record of `run_id`'s `attempt`, or of its last attempt.
    pub fn get_attempt(
        &self,
        run_id: &str,
        attempt: Option<u32>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let json = self.of_attempt(
            "SELECT record FROM runs WHERE run_id = ?1
               AND (CAST(?2 AS BIGINT) IS NULL OR attempt = ?2)
             ORDER BY attempt DESC LIMIT 1",
            run_id,
            attempt,
        )?;
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| self.record_err(e))
    }
}

/// One replica's lease, as the shared history holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its shard's index.
    pub shard: u32,
    /// Which process (host and pid, and a random part).
    pub instance: String,
    /// When its current lease began.
    pub joined: SystemTime,
    /// Its last beat.
    pub seen: SystemTime,
}

impl Store {
    /// Writes `me`'s beat for the replicas of `location` split in `shards`.
    /// Its lease goes on (its `joined` kept) when the last beat is not older
    /// than `expired_before`; otherwise a new one begins at `me.joined`.
    pub fn beat(
        &self,
        location: &str,
        shards: u32,
        me: &Replica,
        expired_before: SystemTime,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO replicas (location, shards, shard, instance, joined_ms, seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (location, shards, shard) DO UPDATE SET
               instance = excluded.instance,
               joined_ms = CASE WHEN replicas.seen_ms >= ?7 THEN replicas.joined_ms
                                ELSE excluded.joined_ms END,
               seen_ms = excluded.seen_ms",
            &[
                location.into(),
                shards.into(),
                me.shard.into(),
                (&me.instance).into(),
                millis(me.joined).into(),
                millis(me.seen).into(),
                millis(expired_before).into(),
            ],
        )?;
        Ok(())
    }

    /// Ends `shard`'s lease now, so the others take its share at their next
    /// beat instead of waiting for it to run out (a clean shutdown).
    pub fn release(&self, location: &str, shards: u32, shard: u32) -> Result<(), StoreError> {
        self.exec(
            "UPDATE replicas SET seen_ms = 0 WHERE location = ?1 AND shards = ?2 AND shard = ?3",
            &[location.into(), shards.into(), shard.into()],
        )?;
        Ok(())
    }

    /// Every replica's lease for `location` split in `shards`.
    pub fn replicas(&self, location: &str, shards: u32) -> Result<Vec<Replica>, StoreError> {
        let rows = self.query(
            "SELECT shard, instance, joined_ms, seen_ms FROM replicas
             WHERE location = ?1 AND shards = ?2 ORDER BY shard",
            &[location.into(), shards.into()],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Replica {
                    shard: r.u32(0)?,
                    instance: r.text(1)?,
                    joined: at_ms(r.int(2)?),
                    seen: at_ms(r.int(3)?),
                })
            })
            .collect::<Result<_, DbError>>()
            .map_err(|e| self.err(e))
    }
}

/// Why SQLite's preparation stopped.
enum Prep {
    Db(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for Prep {
    fn from(e: rusqlite::Error) -> Prep {
        Prep::Db(e)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The writer thread: takes entries from a channel and commits them in
/// batches, prunes old runs hourly, and commits what is left when the
/// channel closes. While the database cannot be written (PostgreSQL down,
/// a network cut), batches go to a disk spool and are written, oldest
/// first, once it answers again; writing an attempt twice changes nothing,
/// so a batch retried after a crash is not counted twice.
pub struct Writer {
    tx: mpsc::SyncSender<Option<Entry>>,
    thread: Option<JoinHandle<()>>,
}

/// Most entries waiting for the writer; beyond this, senders wait.
const QUEUE: usize = 65_536;
/// Most entries per transaction.
const BATCH: usize = 1_000;
/// Most bytes the spool keeps while the database is away (the oldest go first, counted).
pub const SPOOL_MAX: u64 = 1 << 30;
/// Waits between tries of a database that failed: doubling up to the last.
const RETRY: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];

/// The writer's side of the database: connected or not, and its backlog.
struct Link {
    database: Database,
    store: Option<Store>,
    spool: Option<crate::sinks::spool::Spool<Entry>>,
    /// The spool may hold entries older than the next batch.
    backlog: bool,
    /// Failed tries in a row, and when to try next.
    failures: usize,
    next_try: Instant,
    telemetry: Option<std::sync::Arc<crate::telemetry::Telemetry>>,
}

impl Link {
    fn outcome(&self, n: usize, outcome: &'static str) {
        if let Some(m) = &self.telemetry {
            m.store_outcome(n, outcome);
        }
    }

    fn failed(&mut self, e: &StoreError) {
        if self.failures == 0 {
            tracing::error!(error = %e, "history: cannot write to the database; records are kept in the spool until it answers");
        } else {
            tracing::debug!(error = %e, "history: the database still does not answer");
        }
        self.next_try = Instant::now() + RETRY[self.failures.min(RETRY.len() - 1)];
        self.failures += 1;
        // A broken session is not reused; the next try connects afresh.
        self.store = None;
    }

    fn connected(&mut self) -> bool {
        if self.store.is_some() {
            return true;
        }
        if Instant::now() < self.next_try {
            return false;
        }
        match Store::connect(&self.database) {
            Ok(s) => {
                self.store = Some(s);
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn insert(&mut self, batch: &[Entry]) -> Result<(), StoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let t = Instant::now();
        store.insert(batch)?;
        if let Some(m) = &self.telemetry {
            m.store_written(t.elapsed(), batch.len());
        }
        if self.failures > 0 {
            tracing::info!(database = %self.database, "history: the database answers again");
            self.failures = 0;
        }
        Ok(())
    }

    /// Writes the spool's backlog; true when it is empty.
    fn drain(&mut self) -> bool {
        while self.backlog {
            if !self.connected() {
                return false;
            }
            let Some(spool) = &self.spool else {
                self.backlog = false;
                break;
            };
            let chunk = match spool.take(BATCH) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    self.backlog = false;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "history: cannot read the spool");
                    return false;
                }
            };
            let batch: Vec<Entry> = chunk.items.iter().map(|e| e.as_ref().clone()).collect();
            if let Err(e) = self.insert(&batch) {
                self.failed(&e);
                return false;
            }
            if let Some(spool) = &self.spool
                && let Err(e) = spool.commit(chunk)
            {
                // Written; the worst case is writing them again, which
                // changes nothing.
                tracing::warn!(error = %e, "history: cannot mark spooled records as written");
            }
        }
        true
    }

    /// Writes `batch` after the backlog, or keeps it in the spool.
    fn write(&mut self, batch: Vec<Entry>) {
        if batch.is_empty() {
            self.drain();
            return;
        }
        if self.drain() && self.connected() {
            match self.insert(&batch) {
                Ok(()) => return,
                Err(e) => self.failed(&e),
            }
        }
        let Some(spool) = &self.spool else {
            tracing::error!(
                runs = batch.len(),
                "history: could not store runs, and no spool keeps them"
            );
            self.outcome(batch.len(), "lost");
            return;
        };
        let n = batch.len();
        let items: Vec<std::sync::Arc<Entry>> =
            batch.into_iter().map(std::sync::Arc::new).collect();
        match spool.append(&items) {
            Ok(evicted) => {
                self.backlog = true;
                self.outcome(n, "spooled");
                if evicted > 0 {
                    self.outcome(usize::try_from(evicted).unwrap_or(usize::MAX), "lost");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, runs = n, "history: could not store runs, nor spool them");
                self.outcome(n, "lost");
            }
        }
    }
}

impl Writer {
    /// Opens `path` and starts the thread; prunes runs older than `retention` first.
    pub fn start(path: &Path, retention: Duration) -> Result<Writer, StoreError> {
        Self::start_observed(&Database::Sqlite(path.to_path_buf()), retention, None, None)
    }

    /// As [`Writer::start`] for any database, keeping what the database
    /// cannot take in `spool_dir`. A PostgreSQL that does not answer at
    /// start is not fatal when there is a spool: records wait in it.
    pub fn start_with(
        database: &Database,
        retention: Duration,
        spool_dir: Option<&Path>,
    ) -> Result<Writer, StoreError> {
        Self::start_observed(database, retention, None, spool_dir)
    }

    /// As [`Writer::start_with`], timing each batch into `telemetry`.
    pub(crate) fn start_observed(
        database: &Database,
        retention: Duration,
        telemetry: Option<std::sync::Arc<crate::telemetry::Telemetry>>,
        spool_dir: Option<&Path>,
    ) -> Result<Writer, StoreError> {
        let spool = match spool_dir {
            Some(dir) => Some(
                crate::sinks::spool::Spool::<Entry>::open(dir, SPOOL_MAX).map_err(|e| {
                    StoreError::Spool {
                        at: dir.display().to_string(),
                        source: Box::new(e),
                    }
                })?,
            ),
            None => None,
        };
        let mut link = Link {
            database: database.clone(),
            store: None,
            backlog: spool.is_some(),
            spool,
            failures: 0,
            next_try: Instant::now(),
            telemetry,
        };
        // `None` asks the thread to commit what it has and stop, even while
        // a stuck run still holds a sender.
        let (tx, rx) = mpsc::sync_channel::<Option<Entry>>(QUEUE);
        // The database is opened on the writer's thread: PostgreSQL's client
        // runs a runtime of its own, which cannot start on an async one. The
        // caller waits for the outcome, so a bad SQLite path still fails
        // the start.
        let (opened_tx, opened) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let db = database.clone();
        let thread = std::thread::Builder::new()
            .name("waymark-store".into())
            .spawn(move || {
                match Store::connect(&db) {
                    Ok(s) => {
                        prune(&s, retention);
                        link.store = Some(s);
                    }
                    Err(e) if matches!(db, Database::Postgres(_)) && link.spool.is_some() => {
                        link.failed(&e);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                }
                let _ = opened_tx.send(Ok(()));
                let mut last_prune = Instant::now();
                let mut stop = false;
                while !stop {
                    // With a backlog, wake to retry even when no run ends.
                    let wait = if link.backlog || link.store.is_none() {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_secs(60)
                    };
                    let mut batch = match rx.recv_timeout(wait) {
                        Ok(Some(first)) => vec![first],
                        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                            stop = true;
                            Vec::new()
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                    };
                    while !stop && !batch.is_empty() && batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(Some(e)) => batch.push(e),
                            Ok(None) => stop = true,
                            Err(_) => break,
                        }
                    }
                    if let Some(m) = &link.telemetry {
                        m.store_taken(batch.len());
                    }
                    link.write(batch);
                    if last_prune.elapsed() > Duration::from_secs(3600)
                        && let Some(store) = &link.store
                    {
                        prune(store, retention);
                        last_prune = Instant::now();
                    }
                }
                if link.backlog && link.spool.is_some() {
                    // One more try without waiting; what is left stays in
                    // the spool for the next start.
                    link.next_try = Instant::now();
                    if !link.drain() {
                        tracing::warn!("history: the database did not answer before the end; the spool keeps the records for the next start");
                    }
                }
            })
            .map_err(|e| StoreError::Database {
                at: database.to_string(),
                source: DbError::Thread(e),
            })?;
        match opened.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Database {
                    at: database.to_string(),
                    source: DbError::Thread(std::io::Error::other(
                        "the history writer stopped while opening the database",
                    )),
                });
            }
        }
        Ok(Writer {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle to send entries with (`Some(entry)`).
    pub fn sender(&self) -> mpsc::SyncSender<Option<Entry>> {
        self.tx.clone()
    }

    /// Commits everything sent before this call and stops the thread.
    pub fn close(mut self) {
        let _ = self.tx.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn prune(store: &Store, retention: Duration) {
    let Some(before) = SystemTime::now().checked_sub(retention) else {
        return;
    };
    match store.prune(before) {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "history: removed runs past the retention"),
        Err(e) => tracing::warn!(error = %e, "history: could not remove old runs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn entry(run: &str, at: SystemTime) -> Entry {
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "journey": "j", "run_id": run, "location": "l", "attempt": 1,
            "started_at": humantime::format_rfc3339_millis(at).to_string(),
            "duration_ms": 1.0, "status": "pass", "error": null, "steps": [], "logs": []
        }))
        .expect("record");
        Entry {
            record,
            final_attempt: true,
            scheduled_at: None,
            tape: Some(format!("{{\"run\": \"{run}\"}}")),
        }
    }

    #[test]
    fn retention_prunes_old_runs_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("h.db");
        let mut store = Store::open(&path).expect("open");
        let now = SystemTime::now();
        store
            .insert(&[
                entry("old", now - Duration::from_secs(40 * 86400)),
                entry("new", now - Duration::from_secs(3600)),
            ])
            .expect("insert");
        drop(store);
        // The writer prunes at start with the default 30 days.
        Writer::start(&path, Duration::from_secs(30 * 86400))
            .expect("writer")
            .close();
        let store = Store::open(&path).expect("open");
        let left: Vec<String> = store
            .list(&Filter::default())
            .expect("list")
            .into_iter()
            .map(|e| e.record.run_id)
            .collect();
        assert_eq!(left, vec!["new"]);
        // A pruned run's recording goes with it.
        assert_eq!(store.tape("old", None).expect("read"), None);
        assert!(store.tape("new", Some(1)).expect("read").is_some());
        assert_eq!(store.tape("new", Some(2)).expect("read"), None);
    }

    #[test]
    fn a_version_1_history_gets_its_summaries_when_opened() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("h.db");
        let c = Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE runs (run_id TEXT NOT NULL, attempt INTEGER NOT NULL,
               journey TEXT NOT NULL, location TEXT NOT NULL, started_at_ms INTEGER NOT NULL,
               scheduled_at_ms INTEGER, duration_ms REAL NOT NULL, status TEXT NOT NULL,
               final INTEGER NOT NULL, error_kind TEXT, error_message TEXT, record TEXT NOT NULL,
               PRIMARY KEY (run_id, attempt));
             INSERT INTO runs VALUES ('a', 1, 'j', 'l', 86400000, NULL, 1, 'pass', 1, NULL, NULL, '{}');
             INSERT INTO runs VALUES ('b', 1, 'j', 'l', 86460000, NULL, 1, 'fail', 0, NULL, NULL, '{}');
             INSERT INTO runs VALUES ('b', 2, 'j', 'l', 86470000, NULL, 1, 'fail', 1, NULL, NULL, '{}');
             INSERT INTO runs VALUES ('c', 1, 'j', 'l', 86520000, NULL, 1, 'fail', 1, NULL, NULL, '{}');
             PRAGMA user_version = 1;",
        )
        .expect("a version 1 file");
        drop(c);
        let store = Store::open(&path).expect("upgraded");
        let latest = store.latest().expect("latest");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].status, Status::Fail);
        assert_eq!(latest[0].run_id, "c");
        // Failing since the deciding attempt of run b.
        assert_eq!(
            latest[0].since,
            UNIX_EPOCH + Duration::from_millis(86_470_000)
        );
        assert_eq!(store.daily("j", "l", 0).expect("daily"), vec![(1, 3, 1, 0)]);
        // New runs keep them up to date.
        let mut store = store;
        let mut e = entry("d", UNIX_EPOCH + Duration::from_millis(86_600_000));
        e.record.journey = "j".into();
        e.record.location = "l".into();
        store.insert(&[e.clone()]).expect("insert");
        store.insert(&[e]).expect("the same again");
        let latest = store.latest().expect("latest");
        assert_eq!(latest[0].status, Status::Pass);
        assert_eq!(
            latest[0].since,
            UNIX_EPOCH + Duration::from_millis(86_600_000)
        );
        assert_eq!(
            store.daily("j", "l", 0).expect("daily"),
            vec![(1, 4, 2, 0)],
            "counted once"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("h.db");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("set version");
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Version { found: 99, .. })
        ));
    }
}
