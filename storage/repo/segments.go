package repo

import (
	"context"
	"sync"
)

// inOrder runs fn for items 0, 1, 2, … (count of them, or until use says
// stop when count < 0) with up to par running at once, and passes each
// result to use strictly in order. Unlike batches with a barrier, a slow
// segment does not leave the other cores idle, and while one segment waits
// for its transport another is chunking.
func inOrder[T any](ctx context.Context, par, count int, fn func(ctx context.Context, i int) (T, error), use func(i int, v T) (more bool, err error)) error {
	ctx, cancel := context.WithCancel(ctx)
	type slot struct {
		v    T
		err  error
		done chan struct{}
	}
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var queue []*slot
	launched := 0
	for i := 0; count < 0 || i < count; i++ {
		for launched < i+par && (count < 0 || launched < count) {
			s := &slot{done: make(chan struct{})}
			k := launched
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(s.done)
				s.v, s.err = fn(ctx, k)
			}()
			queue = append(queue, s)
			launched++
		}
		s := queue[0]
		queue = queue[1:]
		<-s.done
		if s.err != nil {
			return s.err
		}
		more, err := use(i, s.v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
