package reconnect

import (
	"context"
	"time"
)

// Young is how long a session must last for its end not to count as a
// session that died young (see Backoff).
const Young = time.Second

// MaxBackoff caps the wait after sessions that die young, unless the
// interval itself is longer.
const MaxBackoff = 30 * time.Second

// Backoff spaces out reconnects after sessions that die young: a session
// that lasted less than Young is followed by a wait of at least the
// interval, doubled for each such session in a row, up to MaxBackoff (or the
// interval when it is longer). A session that lasted Young or longer resets
// the count and is followed by no wait: a reconnect after a long session is
// at once, as before.
//
// The zero value uses no interval (then attempts are still minInterval
// apart). A Backoff is used by one goroutine at a time.
type Backoff struct {
	Interval time.Duration
	streak   int
}

// Ended records that a session that lasted lived has ended. It returns how
// long to wait before the next connection and how many sessions in a row
// died young (0 when this one did not). With grow false a young session
// waits the interval but does not make the next wait longer: the caller
// made progress (it set a message aside) and the session is not a loop.
func (b *Backoff) Ended(lived time.Duration, grow bool) (wait time.Duration, streak int) {
	if lived >= Young {
		b.streak = 0
		return 0, 0
	}
	base := max(b.Interval, minInterval)
	if !grow {
		return base, b.streak
	}
	b.streak++
	limit := max(MaxBackoff, b.Interval)
	wait = base
	for i := 1; i < b.streak && wait < limit; i++ {
		wait *= 2
	}
	return min(wait, limit), b.streak
}

// Reset forgets the sessions that died young.
func (b *Backoff) Reset() { b.streak = 0 }

// Streak is how many sessions in a row that died young make the caller
// report that something (a message it cannot handle) keeps ending them.
const Streak = 5

// Sleep waits d and reports whether ctx was still live at the end.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
