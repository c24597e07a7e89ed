package omqs

import (
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// redeliveryTableSize bounds how many messages a consumer tracks for
// MAX_REDELIVERIES at once; the oldest entry is forgotten first.
const redeliveryTableSize = 4096

// redeliveryTable counts, per message, how often this consumer's callbacks
// asked to requeue it. It holds at most size messages; the oldest is
// forgotten first.
type redeliveryTable struct {
	max   int          // 0: no limit
	used  atomic.Int32 // entries, read without the lock on the fast path
	mu    sync.Mutex
	count map[string]*redeliveryEntry
	ring  []string // keys in insertion order
	next  int
}

type redeliveryEntry struct {
	n    int
	slot int
}

func (r *redeliveryTable) init(max, size int) {
	r.max = max
	r.count = make(map[string]*redeliveryEntry)
	r.ring = make([]string, size)
}

// requeue counts one more requeue of d and reports whether it is allowed.
// The retries RetriesHeader counts, and the broker's x-delivery-count
// header (quorum queues), count too.
func (r *redeliveryTable) requeue(d *amqp.Delivery) (n int, ok bool) {
	if r.max == 0 {
		return 0, true
	}
	key := redeliveryKey(d)
	r.mu.Lock()
	e := r.count[key]
	if e == nil {
		if old := r.ring[r.next]; old != "" {
			if oe := r.count[old]; oe != nil && oe.slot == r.next {
				delete(r.count, old)
			}
		}
		e = &redeliveryEntry{slot: r.next}
		r.ring[r.next] = key
		r.next = (r.next + 1) % len(r.ring)
		r.count[key] = e
	}
	e.n++
	n = e.n + retriesOf(d.Headers)
	if hc := deliveryCount(d.Headers) + 1; hc > n {
		n = hc
	}
	ok = n <= r.max
	if !ok {
		delete(r.count, key)
	}
	r.used.Store(int32(len(r.count)))
	r.mu.Unlock()
	return n, ok
}

// requeues returns how often d was requeued, as far as the table knows.
func (r *redeliveryTable) requeues(d *amqp.Delivery) int {
	if r.used.Load() == 0 {
		return 0
	}
	key := redeliveryKey(d)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.count[key]; e != nil {
		return e.n
	}
	return 0
}

// forget drops d's count once its delivery is settled for good.
func (r *redeliveryTable) forget(d *amqp.Delivery) {
	if r.used.Load() == 0 {
		return
	}
	key := redeliveryKey(d)
	r.mu.Lock()
	delete(r.count, key)
	r.used.Store(int32(len(r.count)))
	r.mu.Unlock()
}

// redeliveryKey identifies a message: its id, or without one a hash of its
// exchange, routing key and body.
func redeliveryKey(d *amqp.Delivery) string {
	if d.MessageId != "" {
		return "id:" + d.MessageId
	}
	h := fnv.New64a()
	h.Write([]byte(d.Exchange))
	h.Write([]byte{0})
	h.Write([]byte(d.RoutingKey))
	h.Write([]byte{0})
	h.Write(d.Body)
	return "h:" + strconv.FormatUint(h.Sum64(), 16)
}

// deliveryCount reads the x-delivery-count header quorum queues set.
func deliveryCount(h amqp.Table) int {
	switch v := h["x-delivery-count"].(type) {
	case int:
		return v
	case int8:
		return int(v)
	case int16:
		return int(v)
	case int32:
		return int(v)
	case int64:
		return int(v)
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	case uint64:
		return int(v)
	}
	return 0
}
