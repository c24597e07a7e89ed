package omqs

import (
	"sync"
	"time"
)

// ackDelay is the longest a consumer holds the acknowledgement of a
// delivery whose callback succeeded, waiting to send it with others.
const ackDelay = 2 * time.Millisecond

// maxAckBatch bounds the acknowledgements one multiple ack carries.
const maxAckBatch = 64

// ackBatchFor returns how many acknowledgements a consumer with prefetch
// collects before sending them: a quarter of the prefetch (0: unlimited),
// between 1 and maxAckBatch, so that the broker always has room to send more.
func ackBatchFor(prefetch int) int {
	if prefetch == 0 {
		return maxAckBatch
	}
	return min(max(prefetch/4, 1), maxAckBatch)
}

// acker settles the deliveries of one consumer session. The broker works
// for every acknowledgement it receives, so the positive ones go together:
// one multiple ack for a run of deliveries whose callbacks succeeded, once
// batch of them wait or ackDelay after the first, and whatever waits when
// the session ends gracefully. A multiple ack covers every delivery before
// it on the channel, so it is sent only for a tag below which every
// delivery is settled here (an AsyncConsumer's callbacks end out of order);
// requeues and rejects go out at once, one by one, before any multiple ack
// that could cover them. If the connection is lost, what was not sent is
// delivered again, as a delivery whose callback was still running is.
type acker struct {
	ch interface {
		Ack(tag uint64, multiple bool) error
	}
	batch int
	warn  func(err error, tag uint64, n int) // an ack of n deliveries up to tag could not be sent

	mu      sync.Mutex
	floor   uint64          // every tag below floor is settled here
	last    uint64          // the highest tag below floor acknowledged here and not sent; 0: none
	ready   int             // acknowledgements below floor not sent
	ahead   map[uint64]bool // tags at or above floor settled here: true for an ack not sent
	waiting int             // acks in ahead
	timer   *time.Timer
	armed   bool
	closed  bool
}

func newAcker(ch interface {
	Ack(tag uint64, multiple bool) error
}, batch int, warn func(err error, tag uint64, n int)) *acker {
	return &acker{ch: ch, batch: max(batch, 1), warn: warn, floor: 1, ahead: make(map[uint64]bool)}
}

// ack records that tag's callback succeeded; the acknowledgement goes out
// with others (see acker).
func (a *acker) ack(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		// The session ended gracefully while this callback ran: send it
		// on its own.
		a.send(tag, false, 1)
		return
	}
	if tag == a.floor {
		a.last = tag
		a.ready++
		a.floor++
		a.advance()
	} else {
		a.ahead[tag] = true
		a.waiting++
	}
	switch {
	case a.ready >= a.batch:
		a.flush()
	case a.ready > 0 && !a.armed:
		a.arm()
	}
}

// settle sends settle (a requeue or a reject of tag alone) at once and
// records tag as settled; it returns settle's error.
func (a *acker) settle(tag uint64, settle func() error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := settle()
	if a.closed {
		return err
	}
	if tag == a.floor {
		a.floor++
		a.advance()
	} else {
		a.ahead[tag] = false
	}
	if a.ready > 0 && !a.armed {
		a.arm()
	}
	return err
}

// advance moves floor past the tags settled ahead of it. a.mu is held.
func (a *acker) advance() {
	for {
		acked, ok := a.ahead[a.floor]
		if !ok {
			return
		}
		delete(a.ahead, a.floor)
		if acked {
			a.last = a.floor
			a.ready++
			a.waiting--
		}
		a.floor++
	}
}

// flush sends the acknowledgements below floor as one multiple ack. a.mu is
// held.
func (a *acker) flush() {
	if a.ready == 0 {
		return
	}
	a.send(a.last, a.ready > 1, a.ready)
	a.last, a.ready = 0, 0
}

func (a *acker) send(tag uint64, multiple bool, n int) {
	if err := a.ch.Ack(tag, multiple); err != nil && a.warn != nil {
		a.warn(err, tag, n)
	}
}

// arm starts the timer that flushes in ackDelay. a.mu is held.
func (a *acker) arm() {
	a.armed = true
	if a.timer == nil {
		a.timer = time.AfterFunc(ackDelay, a.fire)
		return
	}
	a.timer.Reset(ackDelay)
}

func (a *acker) fire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if !a.closed {
		a.flush()
	}
}

// close sends every acknowledgement that waits, the ones past a delivery
// that was never settled one by one, and sends the acknowledgements of
// callbacks that end later at once. The session ends gracefully.
func (a *acker) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopTimer()
	a.flush()
	for tag, acked := range a.ahead {
		if acked {
			a.send(tag, false, 1)
		}
	}
	clear(a.ahead)
	a.waiting = 0
	a.closed = true
}

// drop forgets what was not sent: the channel is gone, and the broker
// delivers those messages again.
func (a *acker) drop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopTimer()
	a.closed = true
}

func (a *acker) stopTimer() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.armed = false
}
