// Package dispatch runs user callbacks (error and return handlers) on one
// goroutine owned by the library, so a slow callback never stalls a
// connection's reader.
package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
)

// Dispatcher calls queued functions one at a time, in order, on its own
// goroutine. When its queue is full, Go drops the function and counts it.
//
// The goroutine starts with the first call to Go, so that a Dispatcher that
// is built and never used (a publisher that is never started) leaves none
// behind; Close ends it.
type Dispatcher struct {
	q       chan func()
	dropped atomic.Uint64
	abandon atomic.Bool  // CloseContext gave up: drop what is queued
	mu      sync.RWMutex // held shared by Go, exclusive by Close
	closed  bool
	once    sync.Once
	start   sync.Once // starts run, or (Close before any Go) closes done
	done    chan struct{}
	stop    chan struct{}
}

// New returns a Dispatcher holding at most size queued calls. It starts no
// goroutine: the first call to Go does.
func New(size int) *Dispatcher {
	return &Dispatcher{q: make(chan func(), size), done: make(chan struct{}), stop: make(chan struct{})}
}

func (d *Dispatcher) run() {
	defer close(d.done)
	for {
		select {
		case f := <-d.q:
			d.call(f)
		case <-d.stop:
			// Run what is queued, then end.
			for {
				select {
				case f := <-d.q:
					d.call(f)
				default:
					return
				}
			}
		}
	}
}

// call runs f, or drops it (and counts it) once CloseContext gave up.
func (d *Dispatcher) call(f func()) {
	if d.abandon.Load() {
		d.dropped.Add(1)
		return
	}
	f()
}

// Go queues f. It never blocks; it reports false (and counts a drop) when
// the queue is full or the Dispatcher is closed.
func (d *Dispatcher) Go(f func()) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.dropped.Add(1)
		return false
	}
	d.start.Do(func() { go d.run() })
	select {
	case d.q <- f:
		return true
	default:
		d.dropped.Add(1)
		return false
	}
}

// Dropped returns how many calls were dropped.
func (d *Dispatcher) Dropped() uint64 { return d.dropped.Load() }

// Close runs the queued calls and waits for the goroutine to end. It is
// idempotent.
func (d *Dispatcher) Close() { d.CloseContext(context.Background()) }

// CloseContext is Close that stops waiting when ctx ends: the calls still
// queued are then dropped (and counted), and it returns ctx's error if a
// call is still running (a callback that blocks; its goroutine ends when the
// callback returns).
func (d *Dispatcher) CloseContext(ctx context.Context) error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed = true
		// No Go comes after this: without one before it, there is no
		// goroutine to wait for.
		d.start.Do(func() { close(d.done) })
		d.mu.Unlock()
		close(d.stop)
	})
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		d.abandon.Store(true)
		return ctx.Err()
	}
}
