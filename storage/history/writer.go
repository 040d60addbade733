package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// maxGroup bounds how many writes share one transaction, so a burst does
// not make one transaction (and the wait of its first caller) unbounded.
const maxGroup = 512

// errClosed is returned for writes after Close.
var errClosed = errors.New("history is closed")

// writer commits the runner's writes in groups: every write waiting while
// a transaction commits goes into the next one. A thousand runs finishing
// in the same second then cost a few commits instead of two thousand, and
// a tick's StartBatch no longer queues behind each of them. Each write
// runs inside its own savepoint, so one failing write does not undo the
// others; its caller waits until the group is committed.
type writer struct {
	db   *sql.DB
	ops  chan *writeOp
	done chan struct{}

	mu     sync.RWMutex // held for reading while sending on ops
	closed bool
}

type writeOp struct {
	ctx  context.Context
	fn   func(context.Context, *sql.Tx) error
	errc chan error
}

func newWriter(db *sql.DB) *writer {
	w := &writer{db: db, ops: make(chan *writeOp, maxGroup), done: make(chan struct{})}
	go w.loop()
	return w
}

// do runs fn in a transaction shared with other writes and returns once
// that transaction is committed (or fn's error, if fn failed).
func (w *writer) do(ctx context.Context, fn func(context.Context, *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, fn: fn, errc: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return errClosed
	}
	select {
	case w.ops <- op:
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
	w.mu.RUnlock()
	// Once queued, wait for the outcome even if ctx ends: fn checks ctx
	// itself, and returning early would leave the caller not knowing
	// whether the write happened.
	return <-op.errc
}

// close stops accepting writes and waits for queued ones to commit.
func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ops)
	}
	w.mu.Unlock()
	<-w.done
}

func (w *writer) loop() {
	defer close(w.done)
	for op := range w.ops {
		group := []*writeOp{op}
	more:
		for len(group) < maxGroup {
			select {
			case op, ok := <-w.ops:
				if !ok {
					break more
				}
				group = append(group, op)
			default:
				break more
			}
		}
		w.commit(group)
	}
}

func (w *writer) commit(group []*writeOp) {
	errs := make([]error, len(group))
	reply := func() {
		for i, op := range group {
			op.errc <- errs[i]
		}
	}
	// The group's transaction is not tied to any one caller's context; each
	// write's statements run with its caller's context.
	tx, err := w.db.BeginTx(context.Background(), nil)
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("begin: %w", err)
		}
		reply()
		return
	}
	ok := 0
	for i, op := range group {
		if err := op.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if errs[i] = w.one(tx, op); errs[i] == nil {
			ok++
			continue
		}
		if errors.Is(errs[i], errBroken) {
			// The savepoint could not be undone: the transaction is
			// unusable, so nothing in this group is written.
			tx.Rollback()
			for j := range errs {
				if errs[j] == nil || j > i {
					errs[j] = errs[i]
				}
			}
			reply()
			return
		}
	}
	if ok == 0 {
		tx.Rollback()
	} else if err := tx.Commit(); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("commit: %w", err)
			}
		}
	}
	reply()
}

// errBroken marks a write whose failure could not be rolled back alone.
var errBroken = errors.New("transaction unusable")

// one runs op inside a savepoint of tx and undoes just its changes if it
// fails.
func (w *writer) one(tx *sql.Tx, op *writeOp) error {
	if _, err := tx.ExecContext(op.ctx, `SAVEPOINT w`); err != nil {
		return fmt.Errorf("savepoint: %w: %w", errBroken, err)
	}
	err := op.fn(op.ctx, tx)
	if err != nil {
		// A background context: the caller's may be what ended the write.
		if _, rerr := tx.ExecContext(context.Background(), `ROLLBACK TO w`); rerr != nil {
			return fmt.Errorf("%w: %w (rollback: %w)", errBroken, err, rerr)
		}
	}
	if _, rerr := tx.ExecContext(context.Background(), `RELEASE w`); rerr != nil {
		return fmt.Errorf("%w: release savepoint: %w", errBroken, rerr)
	}
	return err
}
