package omqs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/omqs-go/omqs/internal/dispatch"
)

// handlerGrace is how long Stop (or the end of a consumer's Run) waits for
// the error and return handler calls still queued. Handlers must not block;
// one that does is left to return on its own, and the calls queued behind it
// are dropped.
const handlerGrace = 2 * time.Second

// reporter passes background errors on: to the log at ERROR and to the
// WithErrorHandler function, with the passwords of URLs redacted. It also
// runs the WithReturnHandler function. The handlers are called one at a time,
// in order, on a dispatcher goroutine that the reporter starts with the first
// call and ends in close, so that a reporter that never passes anything on
// starts no goroutine.
//
// A Manager's reporter is shared with its built-in workers; a publisher and
// a consumer have their own. It is safe for concurrent use.
type reporter struct {
	log     *slog.Logger
	who     string      // name of the owner, for the reporter's own warnings
	onError func(error) // may be nil
	size    int         // how many handler calls may wait

	mu     sync.Mutex // guards what follows
	disp   *dispatch.Dispatcher
	closed bool
}

func newReporter(log *slog.Logger, who string, onError func(error), size int) *reporter {
	return &reporter{log: log, who: who, onError: onError, size: size}
}

// report logs err at ERROR and passes it to the error handler.
func (r *reporter) report(err error) {
	err = redactError(err)
	// The error's text is an attribute, quoted by the handlers when it holds
	// a newline or a quote: a broker's, a callback's or a custom worker's
	// error cannot forge a log line of its own.
	r.log.Error("omqs: error", "error", err.Error())
	r.passOn(err)
}

// passOn passes err to the error handler only, for an error its caller
// already logged.
func (r *reporter) passOn(err error) {
	f := r.onError
	if f == nil {
		return
	}
	err = redactError(err)
	if !r.call(func() { f(err) }) {
		r.log.Warn("omqs: error handler queue full or closed; error not passed on", "name", r.who)
	}
}

// call queues f for the dispatcher goroutine, starting it if need be. It
// never blocks; it reports false when f was dropped (the queue is full, or
// the reporter closed).
func (r *reporter) call(f func()) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	if r.disp == nil {
		r.disp = dispatch.New(r.size)
	}
	d := r.disp
	r.mu.Unlock()
	return d.Go(f)
}

// close runs the handler calls still queued and ends the dispatcher
// goroutine, waiting at most handlerGrace. Calls after it are dropped. It
// is idempotent.
func (r *reporter) close() {
	r.mu.Lock()
	r.closed = true
	d := r.disp
	r.mu.Unlock()
	if d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handlerGrace)
	defer cancel()
	if err := d.CloseContext(ctx); err != nil {
		r.log.Warn("omqs: an error or return handler did not return in time; the calls queued behind it were dropped",
			"name", r.who, "dropped", d.Dropped())
	}
}
