-- Per-job persistent state (runner.StateStore): cursors, last rotations,
-- hashes of exported configs. Values are opaque to the history.
CREATE TABLE job_state (
    job        TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;

-- Aggregated findings (loganalyze): how many events, when first and last
-- seen, sample lines (JSON array) and kind-specific details (JSON object).
ALTER TABLE findings ADD COLUMN count      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE findings ADD COLUMN first_seen INTEGER;
ALTER TABLE findings ADD COLUMN last_seen  INTEGER;
ALTER TABLE findings ADD COLUMN examples   TEXT    NOT NULL DEFAULT '';
ALTER TABLE findings ADD COLUMN extra      TEXT    NOT NULL DEFAULT '';
-- `vigil findings --job J` walks one job's runs; by code for reports.
CREATE INDEX findings_code ON findings (code, run_id);
