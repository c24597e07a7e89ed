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
// the acknowledgements held behind a callback that still runs after a
// whole ackDelay go out one by one, so that a slow callback never holds
// the others' (nor the broker's prefetch window) for longer than
// 2 × ackDelay. Requeues and rejects go out at once, one by one, before any
// multiple ack that could cover them. If the connection is lost, what was
// not sent is delivered again, as a delivery whose callback was still
// running is.
type acker struct {
	ch interface {
		Ack(tag uint64, multiple bool) error
	}
	batch int
	warn  func(err error, tag uint64, n int) // an ack of n deliveries up to tag could not be sent

	mu      sync.Mutex
	floor   uint64              // every tag below floor is settled here
	last    uint64              // the highest tag below floor acknowledged here and not sent; 0: none
	ready   int                 // acknowledgements below floor not sent
	ahead   map[uint64]tagState // tags above floor settled here
	waiting int                 // tagHeld entries in ahead
	stuck   uint64              // floor when the timer last fired with acks held behind it
	timer   *time.Timer
	armed   bool
	closed  bool
}

// tagState is what became of a tag settled ahead of the floor.
type tagState uint8

const (
	tagHeld tagState = iota + 1 // acknowledged here, not sent
	tagSent                     // sent on its own (ack, requeue or reject)
)

func newAcker(ch interface {
	Ack(tag uint64, multiple bool) error
}, batch int, warn func(err error, tag uint64, n int)) *acker {
	return &acker{ch: ch, batch: max(batch, 1), warn: warn, floor: 1, ahead: make(map[uint64]tagState)}
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
		a.ahead[tag] = tagHeld
		a.waiting++
	}
	if a.ready >= a.batch {
		a.flush()
	}
	a.maybeArm()
}

// settle sends settle (a requeue or a reject of tag alone) at once and
// records tag as settled; it returns settle's error. A tag whose settle
// failed (the channel is going) is not counted as settled, so that no
// multiple ack covers it.
func (a *acker) settle(tag uint64, settle func() error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := settle()
	if a.closed || err != nil {
		return err
	}
	if tag == a.floor {
		a.floor++
		a.advance()
	} else {
		a.ahead[tag] = tagSent
	}
	a.maybeArm()
	return nil
}

// advance moves floor past the tags settled ahead of it. a.mu is held.
func (a *acker) advance() {
	for {
		st, ok := a.ahead[a.floor]
		if !ok {
			return
		}
		delete(a.ahead, a.floor)
		if st == tagHeld {
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

// send writes one ack. a.mu is held across the write on purpose: a
// requeue or reject must reach the broker before any multiple ack that
// covers its tag, and amqp091 holds its channel's lock across the same
// write anyway.
func (a *acker) send(tag uint64, multiple bool, n int) {
	if err := a.ch.Ack(tag, multiple); err != nil && a.warn != nil {
		a.warn(err, tag, n)
	}
}

// maybeArm starts the timer that flushes in ackDelay when acknowledgements
// wait and it is not running. a.mu is held.
func (a *acker) maybeArm() {
	if a.armed || (a.ready == 0 && a.waiting == 0) {
		return
	}
	a.armed = true
	if a.timer == nil {
		a.timer = time.AfterFunc(ackDelay, a.fire)
		return
	}
	a.timer.Reset(ackDelay)
}

// fire sends what waits below the floor. Acknowledgements held behind the
// floor go out one by one once the floor has not moved for a whole
// ackDelay: its callback is slow, and the broker counts them as unacked.
func (a *acker) fire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.closed {
		return
	}
	a.flush()
	if a.waiting == 0 {
		return
	}
	if a.stuck != a.floor {
		a.stuck = a.floor
		a.maybeArm()
		return
	}
	a.sendHeld()
}

// sendHeld sends the acknowledgements held ahead of the floor one by one.
// a.mu is held.
func (a *acker) sendHeld() {
	for tag, st := range a.ahead {
		if st == tagHeld {
			a.send(tag, false, 1)
			a.ahead[tag] = tagSent
		}
	}
	a.waiting = 0
}

// close sends every acknowledgement that waits, the ones past a delivery
// that was never settled one by one, and sends the acknowledgements of
// callbacks that end later at once. The session ends gracefully.
func (a *acker) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopTimer()
	a.flush()
	a.sendHeld()
	clear(a.ahead)
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
