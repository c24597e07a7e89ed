package membroker

import (
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultMaxQueueLength is the length limit of a queue declared without
// x-max-length. When a queue holds that many ready messages a publish to it is
// rejected: nacked in confirm mode, otherwise dropped and counted in
// Stats.Dropped.
const DefaultMaxQueueLength = 100000

// consumerWindow bounds the deliveries a consumer without a prefetch limit
// takes off its queue ahead of its receiver; the rest stay in the queue and
// count towards its length.
const consumerWindow = 1024

// pushBatch is how many deliveries a consumer goroutine takes at once.
const pushBatch = 64

type overflowMode uint8

const (
	overflowDropHead overflowMode = iota
	overflowRejectPublish
	overflowRejectPublishDLX
)

// message is one published message. It is shared, read-only, by every queue
// it was routed to.
type message struct {
	exchange string
	key      string
	cc       []string        // CC routing keys, kept for x-death
	pub      amqp.Publishing // normalized; Body and Headers owned
	ttl      time.Duration   // per-message TTL from Expiration, -1 for none
}

// entry is a message in one queue.
type entry struct {
	m           *message
	redelivered bool
	count       int32 // times returned to the queue: quorum queues' x-delivery-count
	expires     int64 // UnixNano after which the message expires; 0 for never
}

// deadLetter is a message a queue discards, to be dead-lettered once no lock
// is held.
type deadLetter struct {
	e      entry
	q      *queue
	reason string
}

type queue struct {
	b             *Broker
	name          string
	durable       bool
	autoDelete    bool
	owner         *Connection // exclusive queues
	args          amqp.Table
	quorum        bool
	maxLen        int
	explicitMax   bool
	overflow      overflowMode
	dlx           string
	hasDLX        bool
	dlrk          string
	hasDLRK       bool
	ttl           time.Duration // x-message-ttl, -1 for none
	deliveryLimit int64         // x-delivery-limit, -1 for none
	sac           bool          // x-single-active-consumer

	bindings []*binding // guarded by Broker.mu

	mu                sync.Mutex
	msgs              deque[entry]
	consumers         []*consumer
	rr                int
	exclusiveConsumer bool
	hadConsumer       bool
	deleted           bool
	timer             *time.Timer
	timerAt           int64
}

// consumer is one basic.consume subscription. Its goroutine (run) moves
// deliveries from outbox to the receiver's channel.
type consumer struct {
	ch         *Channel
	q          *queue
	tag        string
	noAck      bool
	exclusive  bool
	prefetch   int // per-consumer limit, 0 for none
	deliveries chan amqp.Delivery
	wake       chan struct{}

	// unacked counts, for manual acknowledgement, the deliveries taken off
	// the queue and not settled yet. It grows under q.mu; an ack shrinks it
	// without the lock and takes the lock only when that gives the consumer
	// room again (see Channel.finish).
	unacked atomic.Int64

	// Guarded by q.mu.
	outbox    deque[entry] // taken off the queue, not yet handed over
	sending   int          // taken from outbox by run, not yet handed over
	idle      bool         // run waits on wake
	cancelled bool
}

// hasRoom reports whether c can take another message. q.mu is held.
func (c *consumer) hasRoom() bool {
	if c.cancelled || c.outbox.len()+c.sending >= consumerWindow {
		return false
	}
	return c.noAck || c.prefetch == 0 || c.unacked.Load() < int64(c.prefetch)
}

// give hands e to c. q.mu is held and c was picked by pick.
func (c *consumer) give(e entry) {
	c.outbox.pushBack(e)
	if !c.noAck {
		c.unacked.Add(1)
	}
	if c.idle {
		c.idle = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// pick returns the next consumer in round-robin order that can take a
// message, reserving channel-wide prefetch credit for it. q.mu is held.
func (q *queue) pick() *consumer {
	n := len(q.consumers)
	if q.sac && n > 0 {
		// Only the first consumer is active.
		if c := q.consumers[0]; c.hasRoom() && (c.noAck || c.ch.reserveGlobal()) {
			return c
		}
		return nil
	}
	for i := 0; i < n; i++ {
		j := q.rr + i
		if j >= n {
			j -= n
		}
		c := q.consumers[j]
		if !c.hasRoom() {
			continue
		}
		if !c.noAck && !c.ch.reserveGlobal() {
			continue
		}
		q.rr = j + 1
		if q.rr == n {
			q.rr = 0
		}
		return c
	}
	return nil
}

// dispatchLocked hands ready messages to consumers that have room, dropping
// expired ones from the head. q.mu is held.
func (q *queue) dispatchLocked(dead *[]deadLetter) {
	var now int64
	for q.msgs.len() > 0 && len(q.consumers) > 0 {
		if exp := q.msgs.front().expires; exp != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if exp <= now {
				*dead = append(*dead, deadLetter{q.msgs.popFront(), q, "expired"})
				continue
			}
		}
		c := q.pick()
		if c == nil {
			return
		}
		c.give(q.msgs.popFront())
	}
}

// enqueue adds e to q. It returns false when q rejected the message because
// it is full (the publisher is nacked).
func (q *queue) enqueue(e entry, dead *[]deadLetter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return true
	}
	if q.msgs.len() >= q.maxLen && (q.overflow != overflowDropHead || !q.explicitMax) {
		q.b.stats.dropped.Add(1)
		if q.overflow == overflowRejectPublishDLX && q.hasDLX {
			*dead = append(*dead, deadLetter{e, q, "maxlen"})
		}
		return false
	}
	if q.msgs.len() == 0 && len(q.consumers) > 0 {
		if c := q.pick(); c != nil {
			c.give(e)
			return true
		}
	}
	q.msgs.pushBack(e)
	q.dropHeadLocked(dead)
	if e.expires != 0 {
		q.expireLocked(dead)
	}
	return true
}

// dropHeadLocked enforces x-max-length with drop-head overflow.
func (q *queue) dropHeadLocked(dead *[]deadLetter) {
	if !q.explicitMax || q.overflow != overflowDropHead {
		return
	}
	for q.msgs.len() > q.maxLen {
		q.discard(q.msgs.popFront(), "maxlen", dead)
	}
}

// discard dead-letters e or, without a dead-letter exchange, drops it. It
// reads only fields that do not change, so q.mu need not be held.
func (q *queue) discard(e entry, reason string, dead *[]deadLetter) {
	if q.hasDLX {
		*dead = append(*dead, deadLetter{e, q, reason})
		return
	}
	if reason == "maxlen" {
		q.b.stats.dropped.Add(1)
	}
}

// expireLocked removes expired messages from the head of q and arms the
// timer for the next head that will expire. q.mu is held.
func (q *queue) expireLocked(dead *[]deadLetter) {
	if q.msgs.len() == 0 || q.msgs.front().expires == 0 {
		return
	}
	now := time.Now().UnixNano()
	for q.msgs.len() > 0 {
		exp := q.msgs.front().expires
		if exp == 0 {
			return
		}
		if exp > now {
			if q.timer == nil || q.timerAt != exp {
				if q.timer != nil {
					q.timer.Stop()
				}
				q.timerAt = exp
				q.timer = time.AfterFunc(time.Duration(exp-now), q.onTimer)
			}
			return
		}
		q.discard(q.msgs.popFront(), "expired", dead)
	}
}

func (q *queue) onTimer() {
	var dead []deadLetter
	q.mu.Lock()
	if !q.deleted {
		q.timer = nil
		q.expireLocked(&dead)
	}
	q.mu.Unlock()
	q.b.deadLetter(dead)
}

// requeue puts returned messages back at the head of q, in order. q.mu is not
// held.
func (q *queue) requeue(list []entry, dead *[]deadLetter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return
	}
	if q.quorum && q.deliveryLimit >= 0 {
		kept := list[:0]
		for _, e := range list {
			if int64(e.count) > q.deliveryLimit {
				q.discard(e, "delivery_limit", dead)
				continue
			}
			kept = append(kept, e)
		}
		list = kept
	}
	q.msgs.pushFrontAll(list)
	q.dispatchLocked(dead)
	q.dropHeadLocked(dead)
	q.expireLocked(dead)
}

// counts returns the ready messages and the consumers of q.
func (q *queue) counts() (int, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.msgs.len(), len(q.consumers)
}

func (q *queue) removeConsumer(c *consumer) {
	for i, e := range q.consumers {
		if e == c {
			copy(q.consumers[i:], q.consumers[i+1:])
			q.consumers[len(q.consumers)-1] = nil
			q.consumers = q.consumers[:len(q.consumers)-1]
			if q.rr > i {
				q.rr--
			}
			if q.rr >= len(q.consumers) {
				q.rr = 0
			}
			break
		}
	}
	if c.exclusive {
		q.exclusiveConsumer = false
	}
}

// unused reports whether q is an auto-delete queue whose last consumer is
// gone. q.mu is held.
func (q *queue) unused() bool {
	return q.autoDelete && q.hadConsumer && len(q.consumers) == 0 && !q.deleted
}

// run is the consumer's goroutine: it hands deliveries from outbox to the
// receiver, waiting without any lock. It stops when the channel closes, or
// after handing over what is in flight once the consumer is cancelled, and
// then closes the delivery channel.
func (c *consumer) run() {
	ch, q := c.ch, c.q
	defer ch.wg.Done()
	var (
		batch []entry
		dead  []deadLetter
	)
	q.mu.Lock()
	for {
		if c.sending > 0 {
			c.sending = 0
			if q.msgs.len() > 0 {
				q.dispatchLocked(&dead)
			}
			if len(dead) > 0 {
				q.mu.Unlock()
				q.b.deadLetter(dead)
				dead = dead[:0]
				q.mu.Lock()
			}
		}
		for c.outbox.len() == 0 {
			if c.cancelled {
				q.mu.Unlock()
				ch.consumerFinished(c)
				return
			}
			c.idle = true
			q.mu.Unlock()
			select {
			case <-c.wake:
			case <-ch.done:
				return
			}
			q.mu.Lock()
		}
		c.idle = false
		n := c.outbox.len()
		if n > pushBatch {
			n = pushBatch
		}
		batch = batch[:0]
		for i := 0; i < n; i++ {
			batch = append(batch, c.outbox.popFront())
		}
		c.sending = n
		q.mu.Unlock()

		first := ch.record(c, batch)
		for i := range batch {
			d := c.delivery(&batch[i], first+uint64(i))
			select {
			case c.deliveries <- d: // the receiver was waiting
				batch[i] = entry{}
				continue
			default:
			}
			select {
			case c.deliveries <- d:
			case <-ch.done:
				if c.noAck {
					// Not handed over, so not acknowledged: back to the outbox,
					// from where the closing channel requeues it.
					q.mu.Lock()
					c.outbox.pushFrontAll(batch[i:])
					c.sending = 0
					q.mu.Unlock()
				}
				return
			}
			batch[i] = entry{}
		}
		q.mu.Lock()
	}
}

// delivery builds what the receiver gets for e.
func (c *consumer) delivery(e *entry, tag uint64) amqp.Delivery {
	m := e.m
	p := &m.pub
	h := copyTable(p.Headers)
	if c.q.quorum && e.count > 0 {
		if h == nil {
			h = amqp.Table{}
		}
		h["x-delivery-count"] = int64(e.count)
	}
	body := make([]byte, len(p.Body))
	copy(body, p.Body)
	return amqp.Delivery{
		Acknowledger:    c.ch,
		Headers:         h,
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationId:   p.CorrelationId,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		MessageId:       p.MessageId,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserId:          p.UserId,
		AppId:           p.AppId,
		ConsumerTag:     c.tag,
		DeliveryTag:     tag,
		Redelivered:     e.redelivered,
		Exchange:        m.exchange,
		RoutingKey:      m.key,
		Body:            body,
	}
}
