-- Findings per run, and an index for catch-up look-ups.
CREATE TABLE findings (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    severity TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    code     TEXT    NOT NULL,
    message  TEXT    NOT NULL,
    subject  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX findings_run ON findings (run_id);
CREATE INDEX findings_severity ON findings (severity, run_id);

-- Catch-up asks for the latest scheduled start of one job at every start-up.
CREATE INDEX runs_job_trigger_scheduled ON runs (job, trigger, scheduled_at);
-- Prune deletes by finish time.
CREATE INDEX runs_finished ON runs (finished_at) WHERE status != 'running';
