-- The history as of waymark 0.1 (SQLite schema version 2), in SQL that
-- SQLite and PostgreSQL both read: SQLite takes BIGINT, DOUBLE PRECISION and
-- BOOLEAN by their affinity, and files made before migrations were kept
-- already hold these tables (IF NOT EXISTS leaves them as they are).
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    journey TEXT NOT NULL,
    location TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    scheduled_at_ms BIGINT,
    duration_ms DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    final BOOLEAN NOT NULL,
    error_kind TEXT,
    error_message TEXT,
    record TEXT NOT NULL,
    maintenance TEXT,
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_by_journey ON runs(journey, started_at_ms);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs(started_at_ms);
CREATE TABLE IF NOT EXISTS acks (
    incident TEXT PRIMARY KEY,
    "by" TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS exchanges (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    tape TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE IF NOT EXISTS daily (
    journey TEXT NOT NULL,
    location TEXT NOT NULL,
    day BIGINT NOT NULL,
    runs BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    maintenance BIGINT NOT NULL,
    PRIMARY KEY (journey, location, day)
);
CREATE TABLE IF NOT EXISTS latest (
    journey TEXT NOT NULL,
    location TEXT NOT NULL,
    status TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    maintenance TEXT,
    PRIMARY KEY (journey, location)
);
