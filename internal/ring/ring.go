// Package ring is a bounded, lock-free queue for many producers and one
// consumer (after Dmitry Vyukov's bounded MPMC queue). A producer never
// waits for the consumer: a push is one compare-and-swap and two stores.
package ring

import "sync/atomic"

// cacheLine keeps the producers' and the consumer's indexes apart.
type pad [64]byte

// Queue holds at most the capacity given to New. TryPush may be called from
// any goroutine; Pop from one goroutine at a time.
type Queue[T any] struct {
	slots []slot[T]
	mask  uint64
	limit uint64 // capacity asked for (may be below len(slots))
	_     pad
	tail  atomic.Uint64 // next position to push
	_     pad
	head  atomic.Uint64 // next position to pop (written by the consumer only)
	_     pad
}

type slot[T any] struct {
	seq atomic.Uint64
	v   T
}

// New returns a Queue holding at most capacity (≥ 1) values.
func New[T any](capacity int) *Queue[T] {
	if capacity < 1 {
		capacity = 1
	}
	n := uint64(1)
	for n < uint64(capacity) {
		n <<= 1
	}
	q := &Queue[T]{slots: make([]slot[T], n), mask: n - 1, limit: uint64(capacity)}
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
	return q
}

// TryPush adds v, or reports false when the queue is full.
func (q *Queue[T]) TryPush(v T) bool {
	for {
		pos := q.tail.Load()
		head := q.head.Load()
		if pos < head {
			continue // pos is stale: the tail has moved on
		}
		if pos-head >= q.limit {
			return false
		}
		s := &q.slots[pos&q.mask]
		seq := s.seq.Load()
		switch d := int64(seq - pos); {
		case d == 0:
			if q.tail.CompareAndSwap(pos, pos+1) {
				s.v = v
				s.seq.Store(pos + 1) // publishes v to the consumer
				return true
			}
		case d < 0:
			return false // the consumer has not freed this slot yet: full
		}
		// Another producer took pos: try the next one.
	}
}

// Pop removes the oldest value, or reports false when there is none ready.
// Only one goroutine may call Pop at a time.
func (q *Queue[T]) Pop() (T, bool) {
	var zero T
	pos := q.head.Load()
	s := &q.slots[pos&q.mask]
	if s.seq.Load() != pos+1 {
		return zero, false
	}
	v := s.v
	s.v = zero
	s.seq.Store(pos + q.mask + 1) // frees the slot for the push one lap later
	q.head.Store(pos + 1)
	return v, true
}

// Len returns how many values are in the queue (pushes under way included).
func (q *Queue[T]) Len() int {
	h, t := q.head.Load(), q.tail.Load()
	if t < h {
		return 0
	}
	return int(t - h)
}

// Cap returns the capacity given to New (at least 1).
func (q *Queue[T]) Cap() int { return int(q.limit) }
