package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vigilops/vigil/runner"
)

var _ runner.StateStore = (*DB)(nil)

// GetState implements runner.StateStore.
func (h *DB) GetState(ctx context.Context, job, key string) ([]byte, bool, error) {
	var v []byte
	err := h.rdb.QueryRowContext(ctx, `SELECT value FROM job_state WHERE job = ? AND key = ?`, job, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get state %s/%s: %w", job, key, err)
	}
	return v, true, nil
}

// PutState implements runner.StateStore.
func (h *DB) PutState(ctx context.Context, job, key string, value []byte) error {
	if value == nil {
		value = []byte{} // NOT NULL: an empty value is still a value
	}
	_, err := h.db.ExecContext(ctx, `INSERT INTO job_state (job, key, value, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (job, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		job, key, value, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("put state %s/%s: %w", job, key, err)
	}
	return nil
}

// DeleteState implements runner.StateStore.
func (h *DB) DeleteState(ctx context.Context, job, key string) error {
	if _, err := h.db.ExecContext(ctx, `DELETE FROM job_state WHERE job = ? AND key = ?`, job, key); err != nil {
		return fmt.Errorf("delete state %s/%s: %w", job, key, err)
	}
	return nil
}

// ListState implements runner.StateStore.
func (h *DB) ListState(ctx context.Context, job, prefix string) (map[string][]byte, error) {
	// A range on the primary key instead of LIKE: keys are paths and may
	// hold % or _.
	q, args := `SELECT key, value FROM job_state WHERE job = ? AND key >= ?`, []any{job, prefix}
	if prefix != "" {
		if hi, ok := prefixEnd(prefix); ok {
			q, args = q+` AND key < ?`, append(args, hi)
		}
	}
	rows, err := h.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list state %s/%s*: %w", job, prefix, err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("list state %s/%s*: %w", job, prefix, err)
		}
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list state %s/%s*: %w", job, prefix, err)
	}
	return out, nil
}

// prefixEnd returns the smallest string above every string with prefix p.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

var _ runner.FindingLister = (*DB)(nil)

// ListFindings implements runner.FindingLister. It walks runs newest
// first through runs_at/runs_job_at and joins their findings.
func (h *DB) ListFindings(ctx context.Context, f runner.FindingFilter) ([]runner.FindingRecord, error) {
	var where []string
	var args []any
	if f.Job != "" {
		where, args = append(where, "r.job = ?"), append(args, f.Job)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "r.at >= ?"), append(args, f.Since.UnixMilli())
	}
	if f.MinSeverity != "" {
		var sevs []string
		for _, s := range []runner.Severity{runner.SeverityInfo, runner.SeverityWarning, runner.SeverityError, runner.SeverityCritical} {
			if s.AtLeast(f.MinSeverity) {
				sevs, args = append(sevs, "?"), append(args, string(s))
			}
		}
		where = append(where, "f.severity IN ("+strings.Join(sevs, ", ")+")")
	}
	if f.Code != "" {
		if strings.HasSuffix(f.Code, ".") {
			hi, _ := prefixEnd(f.Code)
			where, args = append(where, "f.code >= ? AND f.code < ?"), append(args, f.Code, hi)
		} else {
			where, args = append(where, "f.code = ?"), append(args, f.Code)
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT f.run_id, r.job, r.at, ` + findingCols + ` FROM findings f JOIN runs r ON r.id = f.run_id`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY r.at DESC, f.run_id DESC, f.id LIMIT ?"
	args = append(args, limit)
	rows, err := h.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	defer rows.Close()
	var out []runner.FindingRecord
	for rows.Next() {
		var rec runner.FindingRecord
		var at int64
		fd, err := scanFinding(rows, &rec.RunID, &rec.Job, &at)
		if err != nil {
			return nil, fmt.Errorf("list findings: %w", err)
		}
		rec.Finding, rec.At = fd, time.UnixMilli(at).UTC()
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	return out, nil
}
