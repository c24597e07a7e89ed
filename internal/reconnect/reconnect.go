// Package reconnect connects to one of several broker addresses, retrying
// every interval up to a number of attempts, and runs the caller's setup
// (channels, topology) on each new connection.
package reconnect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/omqs-go/omqs/internal/transport"
)

// minInterval keeps RECONNECT_INTERVAL=0 from redialing in a tight loop.
const minInterval = 10 * time.Millisecond

// Dialer connects to Endpoints in turn. It is used by one goroutine at a time.
//
// The first address is the preferred one: every Connect, the first and each
// reconnect, tries the addresses in their order, from the first, so that a
// connection goes back to the preferred broker (or cluster node) at its
// next reconnect once that broker answers again. One exception: in the first
// round of a reconnect, the address of the connection Connect returned last
// (the one just lost, most likely) is tried last, so that the reconnect does
// not wait on a broker that has just failed before trying the others. A
// live connection is never moved: a connection on another address stays
// there until it breaks.
type Dialer struct {
	Endpoints []transport.Endpoint
	Options   transport.DialOptions
	// Interval is the wait between attempts; one attempt tries every endpoint once.
	Interval time.Duration
	// Times is how many attempts fail before Connect gives up; 0 means no limit.
	Times  int
	Logger *slog.Logger
	// Wait, when set, replaces the timer between attempts (tests).
	Wait func(ctx context.Context, d time.Duration) error

	// last is 1 + the index of the endpoint of the connection Connect
	// returned last; 0 before the first.
	last int
}

// SetupFunc prepares a new connection (opens channels, declares topology).
// When it fails, Connect closes the connection and counts a failed attempt.
type SetupFunc func(ctx context.Context, c transport.Conn) error

// GiveUpError is returned when every attempt failed.
type GiveUpError struct {
	Attempts int
	Last     error
}

func (e *GiveUpError) Error() string {
	return fmt.Sprintf("gave up after %d attempt(s): %v", e.Attempts, e.Last)
}

func (e *GiveUpError) Unwrap() error { return e.Last }

// PermanentError marks a setup error that retrying cannot fix (a declaration
// the broker refuses). Connect returns it at once when failFast is set.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Connect dials until an endpoint accepts and setup succeeds. With failFast,
// an error that retrying cannot fix (wrong credentials, missing vhost,
// untrusted certificate, a PermanentError from setup) on every endpoint
// returns at once. If ctx ends first it returns an error wrapping ctx's
// error and the last failed attempt's error; after Times failed attempts, a
// *GiveUpError.
func (d *Dialer) Connect(ctx context.Context, setup SetupFunc, failFast bool) (transport.Conn, error) {
	if len(d.Endpoints) == 0 {
		return nil, errors.New("no broker address")
	}
	var last error
	for attempt := 1; ; attempt++ {
		allPermanent := true
		for _, idx := range d.order(attempt) {
			ep := d.Endpoints[idx]
			conn, err := transport.Dial(ctx, ep, d.Options)
			if err == nil {
				err = setup(ctx, conn)
				if err != nil {
					_ = conn.CloseDeadline(time.Now().Add(time.Second))
					var pe *PermanentError
					if !errors.As(err, &pe) {
						allPermanent = false
					}
					err = fmt.Errorf("%s: %w", ep, err)
				} else {
					d.last = idx + 1
					return conn, nil
				}
			} else {
				var de *transport.DialError
				if !errors.As(err, &de) || !de.Permanent {
					allPermanent = false
				}
			}
			if ctx.Err() != nil {
				if !errors.Is(err, ctx.Err()) {
					last = err // a failure of its own, not the interruption
				}
				return nil, interrupted(ctx, last)
			}
			last = err
			if d.Logger != nil {
				d.Logger.Warn("omqs: connect failed", "attempt", attempt, "error", err.Error())
			}
		}
		if failFast && allPermanent {
			return nil, last
		}
		if d.Times > 0 && attempt >= d.Times {
			return nil, &GiveUpError{Attempts: attempt, Last: last}
		}
		if err := d.wait(ctx); err != nil {
			if ctx.Err() == nil {
				return nil, err // a Wait of the caller's failed
			}
			return nil, interrupted(ctx, last)
		}
	}
}

// order returns the indexes of the endpoints to try in attempt (1 is the
// first): MQURL's order, except that the first attempt of a reconnect tries
// the endpoint of the previous connection last.
func (d *Dialer) order(attempt int) []int {
	idx := make([]int, 0, len(d.Endpoints))
	skip := -1
	if attempt == 1 && d.last > 0 && len(d.Endpoints) > 1 {
		skip = d.last - 1
	}
	for i := range d.Endpoints {
		if i != skip {
			idx = append(idx, i)
		}
	}
	if skip >= 0 {
		idx = append(idx, skip)
	}
	return idx
}

// Endpoint returns the endpoint of the connection Connect returned last, and
// false before Connect first succeeded.
func (d *Dialer) Endpoint() (transport.Endpoint, bool) {
	if d.last == 0 {
		return transport.Endpoint{}, false
	}
	return d.Endpoints[d.last-1], true
}

// interrupted is Connect's error when ctx ended: ctx's error, and the last
// attempt's failure when there was one, so that the error says why the
// broker could not be reached meanwhile.
func interrupted(ctx context.Context, last error) error {
	if last == nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w; last attempt: %w", ctx.Err(), last)
}

func (d *Dialer) wait(ctx context.Context) error {
	if d.Wait != nil {
		return d.Wait(ctx, d.Interval)
	}
	// Even with no interval, attempts are a little apart.
	t := time.NewTimer(max(d.Interval, minInterval))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
