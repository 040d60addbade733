// Package history is the SQLite run history (runner.History). It is
// built so that it never blocks a backup: WAL mode lets the CLI and web UI
// read while the daemon writes, a busy timeout absorbs short write
// contention, and schema changes are embedded, numbered migrations applied
// at open.
package history

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/vigilops/vigil/runner"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options adjusts Open.
type Options struct {
	// ReadOnly opens the database without migrating or writing (for
	// readers on a database they may not write); its schema must be current.
	ReadOnly bool
	// BusyTimeout is how long a statement waits for a lock (default 5s).
	BusyTimeout time.Duration
}

// DB is a SQLite run history.
type DB struct {
	// db is the single writer connection: SQLite allows one writer at a
	// time, and several pooled writers only meet in its busy handler, which
	// sleeps in millisecond steps. One connection queues writers in Go
	// instead, in arrival order, with no sleeping.
	db *sql.DB
	// rdb is a pool of query-only connections; in WAL mode they read
	// while the writer writes.
	rdb *sql.DB
	// w groups the runner's writes (runs, logs, findings) into shared
	// transactions on db.
	w    *writer
	path string
}

var _ runner.History = (*DB)(nil)

// Open opens (creating and migrating if needed) the history at path. A
// corrupt or unwritable file is an error here, at open, so the daemon can
// fall back to an in-memory history and say so, instead of failing runs.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10))
	q.Set("_foreign_keys", "on")
	if opts.ReadOnly {
		q.Set("mode", "ro")
	} else if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	rq := maps.Clone(q)
	rq.Set("_query_only", "true")
	if !opts.ReadOnly {
		q.Set("_txlock", "immediate") // take the write lock at BEGIN: no upgrade deadlocks
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "NORMAL") // WAL + NORMAL: durable across process crashes
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	h := &DB{db: db, rdb: db, path: path}
	if err := h.init(ctx, opts.ReadOnly); err != nil {
		db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	h.w = newWriter(db)
	// The read pool opens after init, so its connections see WAL mode
	// and the migrated schema.
	if h.rdb, err = sql.Open("sqlite3", "file:"+path+"?"+rq.Encode()); err != nil {
		h.w.close()
		db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	return h, nil
}

func (h *DB) init(ctx context.Context, readOnly bool) error {
	version, err := h.version(ctx)
	if err != nil {
		return err
	}
	migs, err := migrations()
	if err != nil {
		return err
	}
	if readOnly {
		if version != len(migs) {
			return fmt.Errorf("schema version %d, this vigil reads version %d (start the daemon once to migrate)", version, len(migs))
		}
		return nil
	}
	if version > len(migs) {
		return fmt.Errorf("schema version %d is newer than this vigil (%d): refusing to write", version, len(migs))
	}
	if err := h.migrate(ctx, migs, len(migs)); err != nil {
		return err
	}
	// A real write proves the file is writable now, not at the first run.
	if _, err := h.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('opened_at', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("write check: %w", err)
	}
	return nil
}

func (h *DB) version(ctx context.Context) (int, error) {
	var v int
	if err := h.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad name", e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: n, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations: expected version %d, found %s", i+1, m.name)
		}
	}
	return out, nil
}

// migrate applies migrations up to target, each in its own transaction
// together with the version bump, so a crash leaves a consistent version.
func (h *DB) migrate(ctx context.Context, migs []migration, target int) error {
	for {
		version, err := h.version(ctx)
		if err != nil {
			return err
		}
		if version >= target {
			return nil
		}
		m := migs[version]
		tx, err := h.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to %d: %w", m.version, err)
		}
		// Re-check inside the write lock: another process may have migrated.
		var now int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&now); err != nil || now != version {
			tx.Rollback()
			if err != nil {
				return fmt.Errorf("migrate to %d: %w", m.version, err)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, m.version)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", m.version, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to %d: %w", m.version, err)
		}
	}
}

// Path returns the database file.
func (h *DB) Path() string { return h.path }

// Close closes the database.
func (h *DB) Close() error {
	h.w.close()
	if err := errors.Join(h.rdb.Close(), h.db.Close()); err != nil {
		return fmt.Errorf("close history: %w", err)
	}
	return nil
}

func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func fromMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}

func sortAt(r runner.Run) int64 {
	for _, t := range []time.Time{r.StartedAt, r.ScheduledAt, r.FinishedAt} {
		if !t.IsZero() {
			return t.UnixMilli()
		}
	}
	return time.Now().UnixMilli()
}

func summaryJSON(s runner.Summary) (string, error) {
	if len(s.Extra) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(s.Extra)
	if err != nil {
		return "", fmt.Errorf("encode summary: %w", err)
	}
	return string(b), nil
}

const (
	insertValues = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertRun    = `INSERT INTO runs (job, kind, trigger, scheduled_at, started_at, finished_at, at, status, attempt, error,
	bytes_read, bytes_new, bytes_stored, files, snapshot_id, summary, pid) VALUES ` + insertValues
)

// runArgs returns insertRun's arguments for r.
func runArgs(r runner.Run) ([]any, error) {
	sum, err := summaryJSON(r.Summary)
	if err != nil {
		return nil, err
	}
	return []any{r.Job, r.Kind, string(r.Trigger), ms(r.ScheduledAt), ms(r.StartedAt), ms(r.FinishedAt), sortAt(r),
		string(r.Status), max(r.Attempt, 1), r.Error, r.Summary.BytesRead, r.Summary.BytesNew, r.Summary.BytesStored, r.Summary.Files,
		r.Summary.SnapshotID, sum, r.PID}, nil
}

func (h *DB) insert(ctx context.Context, op string, r runner.Run) (id int64, err error) {
	args, err := runArgs(r)
	if err != nil {
		return 0, fmt.Errorf("%s for job %s: %w", op, r.Job, err)
	}
	err = h.inTx(ctx, op+" for job "+r.Job, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, insertRun, args...)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

// Start implements runner.Recorder.
func (h *DB) Start(ctx context.Context, r runner.Run) (int64, error) {
	return h.insert(ctx, "start run", r)
}

// batchRows is how many runs one multi-row INSERT carries: 17 columns x
// 400 stays far below SQLite's 32,766 bound variables.
const batchRows = 400

// StartBatch implements runner.Recorder: one transaction for all runs,
// with multi-row INSERTs (one statement per 400 runs, not per run).
func (h *DB) StartBatch(ctx context.Context, runs []runner.Run) ([]int64, error) {
	ids := make([]int64, len(runs))
	err := h.inTx(ctx, "start runs", func(tx *sql.Tx) error {
		for lo := 0; lo < len(runs); lo += batchRows {
			chunk := runs[lo:min(lo+batchRows, len(runs))]
			args := make([]any, 0, len(chunk)*17)
			for _, r := range chunk {
				a, err := runArgs(r)
				if err != nil {
					return fmt.Errorf("job %s: %w", r.Job, err)
				}
				args = append(args, a...)
			}
			q := insertRun + strings.Repeat(", "+insertValues, len(chunk)-1)
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return err
			}
			last, err := res.LastInsertId()
			if err != nil {
				return err
			}
			// One statement in a write transaction: SQLite numbers its
			// rows consecutively (AUTOINCREMENT, no other writer), so the
			// last id gives all of them.
			for i := range chunk {
				ids[lo+i] = last - int64(len(chunk)-1-i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// Record implements runner.Recorder.
func (h *DB) Record(ctx context.Context, r runner.Run) (int64, error) {
	return h.insert(ctx, "record run", r)
}

// Finish implements runner.Recorder.
func (h *DB) Finish(ctx context.Context, r runner.Run) error {
	sum, err := summaryJSON(r.Summary)
	if err != nil {
		return fmt.Errorf("finish run %d: %w", r.ID, err)
	}
	return h.inTx(ctx, fmt.Sprintf("finish run %d", r.ID), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE runs SET finished_at = ?, status = ?, attempt = ?, error = ?, bytes_read = ?, bytes_new = ?,
		bytes_stored = ?, files = ?, snapshot_id = ?, summary = ? WHERE id = ?`,
			ms(r.FinishedAt), string(r.Status), max(r.Attempt, 1), r.Error, r.Summary.BytesRead, r.Summary.BytesNew, r.Summary.BytesStored,
			r.Summary.Files, r.Summary.SnapshotID, sum, r.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return runner.ErrNotFound
		}
		return nil
	})
}

// AppendLogs implements runner.Recorder.
func (h *DB) AppendLogs(ctx context.Context, runID int64, lines []runner.LogLine) error {
	return h.inTx(ctx, "append run log", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO run_logs (run_id, seq, at, level, message, attrs) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, l := range lines {
			if _, err := st.ExecContext(ctx, runID, l.Seq, l.At.UnixMilli(), l.Level, l.Message, l.Attrs); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddFindings implements runner.Recorder.
func (h *DB) AddFindings(ctx context.Context, runID int64, fs []runner.Finding) error {
	return h.inTx(ctx, "add findings", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO findings (run_id, severity, code, message, subject, count, first_seen, last_seen, examples, extra)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, f := range fs {
			sev := f.Severity
			if sev == "" {
				sev = runner.SeverityInfo
			}
			examples, extra := "", ""
			if len(f.Examples) > 0 {
				b, err := json.Marshal(f.Examples)
				if err != nil {
					return fmt.Errorf("encode examples of %s: %w", f.Code, err)
				}
				examples = string(b)
			}
			if len(f.Extra) > 0 {
				b, err := json.Marshal(f.Extra)
				if err != nil {
					return fmt.Errorf("encode details of %s: %w", f.Code, err)
				}
				extra = string(b)
			}
			if _, err := st.ExecContext(ctx, runID, string(sev), f.Code, f.Message, f.Subject, f.Count, ms(f.FirstSeen), ms(f.LastSeen), examples, extra); err != nil {
				return err
			}
		}
		return nil
	})
}

const findingCols = `f.severity, f.code, f.message, f.subject, f.count, f.first_seen, f.last_seen, f.examples, f.extra`

// scanFinding scans findingCols after the given leading destinations.
func scanFinding(sc interface{ Scan(...any) error }, lead ...any) (runner.Finding, error) {
	var f runner.Finding
	var sev, examples, extra string
	var first, last sql.NullInt64
	if err := sc.Scan(append(lead, &sev, &f.Code, &f.Message, &f.Subject, &f.Count, &first, &last, &examples, &extra)...); err != nil {
		return f, err
	}
	f.Severity, f.FirstSeen, f.LastSeen = runner.Severity(sev), fromMS(first), fromMS(last)
	if examples != "" {
		if err := json.Unmarshal([]byte(examples), &f.Examples); err != nil {
			return f, fmt.Errorf("decode examples of %s: %w", f.Code, err)
		}
	}
	if extra != "" {
		if err := json.Unmarshal([]byte(extra), &f.Extra); err != nil {
			return f, fmt.Errorf("decode details of %s: %w", f.Code, err)
		}
	}
	return f, nil
}

// inTx runs fn in a transaction shared with other writes waiting at the
// same time (see writer); fn must use only tx.
func (h *DB) inTx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	err := h.w.do(ctx, func(ctx context.Context, tx *sql.Tx) error { return fn(tx) })
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// LastScheduled implements runner.Recorder.
func (h *DB) LastScheduled(ctx context.Context, job string) (time.Time, bool, error) {
	var v sql.NullInt64
	err := h.rdb.QueryRowContext(ctx, `SELECT max(scheduled_at) FROM runs WHERE job = ? AND trigger IN ('schedule', 'catch-up')`, job).Scan(&v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("last scheduled run of %s: %w", job, err)
	}
	return fromMS(v), v.Valid, nil
}

// MarkInterrupted implements runner.Recorder.
func (h *DB) MarkInterrupted(ctx context.Context, at time.Time, stillRunning func(runner.Run) bool) (int, error) {
	running, err := h.Runs(ctx, runner.RunFilter{Status: runner.StatusRunning, Limit: 10000})
	if err != nil {
		return 0, fmt.Errorf("mark interrupted runs: %w", err)
	}
	n := 0
	for _, r := range running {
		if stillRunning != nil && stillRunning(r) {
			continue
		}
		res, err := h.db.ExecContext(ctx, `UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status = 'running'`,
			runner.InterruptedError, at.UnixMilli(), r.ID)
		if err != nil {
			return n, fmt.Errorf("mark run %d interrupted: %w", r.ID, err)
		}
		c, _ := res.RowsAffected()
		n += int(c)
	}
	return n, nil
}

const runCols = `id, job, kind, trigger, scheduled_at, started_at, finished_at, status, attempt, error,
	bytes_read, bytes_new, bytes_stored, files, snapshot_id, summary, pid`

func scanRun(sc interface{ Scan(...any) error }) (runner.Run, error) {
	var r runner.Run
	var trig, status, sum string
	var sched, started, finished sql.NullInt64
	err := sc.Scan(&r.ID, &r.Job, &r.Kind, &trig, &sched, &started, &finished, &status, &r.Attempt, &r.Error,
		&r.Summary.BytesRead, &r.Summary.BytesNew, &r.Summary.BytesStored, &r.Summary.Files, &r.Summary.SnapshotID, &sum, &r.PID)
	if err != nil {
		return r, err
	}
	r.Trigger, r.Status = runner.Trigger(trig), runner.Status(status)
	r.ScheduledAt, r.StartedAt, r.FinishedAt = fromMS(sched), fromMS(started), fromMS(finished)
	if sum != "" && sum != "{}" {
		if err := json.Unmarshal([]byte(sum), &r.Summary.Extra); err != nil {
			return r, fmt.Errorf("decode summary of run %d: %w", r.ID, err)
		}
	}
	return r, nil
}

// Runs implements runner.Reader. Each filter maps onto an index.
func (h *DB) Runs(ctx context.Context, f runner.RunFilter) ([]runner.Run, error) {
	var where []string
	var args []any
	if f.Job != "" {
		where, args = append(where, "job = ?"), append(args, f.Job)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if !f.Since.IsZero() {
		where, args = append(where, "at >= ?"), append(args, f.Since.UnixMilli())
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q := "SELECT " + runCols + " FROM runs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := h.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []runner.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out, nil
}

// Get implements runner.Reader.
func (h *DB) Get(ctx context.Context, id int64) (runner.Run, error) {
	r, err := scanRun(h.rdb.QueryRowContext(ctx, "SELECT "+runCols+" FROM runs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("get run %d: %w", id, runner.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get run %d: %w", id, err)
	}
	return r, nil
}

// Logs implements runner.Reader.
func (h *DB) Logs(ctx context.Context, runID int64) ([]runner.LogLine, error) {
	rows, err := h.rdb.QueryContext(ctx, `SELECT seq, at, level, message, attrs FROM run_logs WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("run %d log: %w", runID, err)
	}
	defer rows.Close()
	var out []runner.LogLine
	for rows.Next() {
		var l runner.LogLine
		var at int64
		if err := rows.Scan(&l.Seq, &at, &l.Level, &l.Message, &l.Attrs); err != nil {
			return nil, fmt.Errorf("run %d log: %w", runID, err)
		}
		l.At = time.UnixMilli(at).UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("run %d log: %w", runID, err)
	}
	return out, nil
}

// Findings implements runner.Reader.
func (h *DB) Findings(ctx context.Context, runID int64) ([]runner.Finding, error) {
	rows, err := h.rdb.QueryContext(ctx, `SELECT `+findingCols+` FROM findings f WHERE run_id = ? ORDER BY id`, runID)
	if err != nil {
		return nil, fmt.Errorf("run %d findings: %w", runID, err)
	}
	defer rows.Close()
	var out []runner.Finding
	for rows.Next() {
		f, err := scanFinding(rows)
		if err != nil {
			return nil, fmt.Errorf("run %d findings: %w", runID, err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("run %d findings: %w", runID, err)
	}
	return out, nil
}

// LastRuns implements runner.Reader.
func (h *DB) LastRuns(ctx context.Context) (map[string]runner.Run, error) {
	// A loose index scan: walk the distinct jobs through runs_job_at with
	// one seek each, instead of grouping a million rows.
	rows, err := h.rdb.QueryContext(ctx, `WITH RECURSIVE jobs(j) AS (
			SELECT min(job) FROM runs
			UNION ALL
			SELECT (SELECT min(job) FROM runs WHERE job > j) FROM jobs WHERE j IS NOT NULL)
		SELECT `+runCols+` FROM runs WHERE id IN (
			SELECT (SELECT id FROM runs WHERE job = j ORDER BY at DESC, id DESC LIMIT 1) FROM jobs WHERE j IS NOT NULL)`)
	if err != nil {
		return nil, fmt.Errorf("last runs: %w", err)
	}
	defer rows.Close()
	out := map[string]runner.Run{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("last runs: %w", err)
		}
		out[r.Job] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("last runs: %w", err)
	}
	return out, nil
}

// pruneBatch keeps each delete transaction short so the daemon's writes
// are never held up for long.
const pruneBatch = 5000

// Prune implements runner.History.
func (h *DB) Prune(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := h.db.ExecContext(ctx, `DELETE FROM runs WHERE id IN (
			SELECT id FROM runs WHERE status != 'running' AND finished_at < ? LIMIT ?)`, before.UnixMilli(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune history: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
