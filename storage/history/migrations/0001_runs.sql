-- Runs and their log lines. Times are Unix milliseconds (UTC); NULL means
-- "did not happen" (a missed run never started).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT    NOT NULL,
    kind         TEXT    NOT NULL DEFAULT '',
    trigger      TEXT    NOT NULL CHECK (trigger IN ('schedule', 'catch-up', 'manual', 'api')),
    scheduled_at INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER,
    -- at orders runs: when the run started, or was due if it never started.
    at           INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'success', 'partial', 'failed', 'skipped', 'missed', 'cancelled')),
    attempt      INTEGER NOT NULL DEFAULT 1,
    error        TEXT    NOT NULL DEFAULT '',
    bytes_read   INTEGER NOT NULL DEFAULT 0,
    bytes_new    INTEGER NOT NULL DEFAULT 0,
    bytes_stored INTEGER NOT NULL DEFAULT 0,
    files        INTEGER NOT NULL DEFAULT 0,
    snapshot_id  TEXT    NOT NULL DEFAULT '',
    summary      TEXT    NOT NULL DEFAULT '{}',
    pid          INTEGER NOT NULL DEFAULT 0
);

-- Reports filter by job, by status and by time, newest first.
CREATE INDEX runs_at ON runs (at DESC);
CREATE INDEX runs_job_at ON runs (job, at DESC);
CREATE INDEX runs_status_at ON runs (status, at DESC);

CREATE TABLE run_logs (
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    attrs   TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
