package membroker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// registry holds every broker of the process by name. It is the package's
// only state: brokers are never removed, like a RabbitMQ node that keeps its
// exchanges and queues until they are deleted.
var registry = struct {
	sync.Mutex
	brokers map[string]*Broker
}{brokers: make(map[string]*Broker)}

// Get returns the broker named name, creating it when it does not exist yet.
// Tests use it to inspect a broker and to inject faults.
func Get(name string) *Broker {
	registry.Lock()
	defer registry.Unlock()
	b := registry.brokers[name]
	if b == nil {
		b = newBroker(name)
		registry.brokers[name] = b
	}
	return b
}

// Dial opens a connection to the broker named name; every connection with the
// same name shares one broker.
func Dial(name string) (*Connection, error) {
	return Get(name).Dial()
}

// Broker is one in-process message broker: a RabbitMQ node with a single
// virtual host "/".
type Broker struct {
	name string

	mu        sync.RWMutex // topology: exchanges, queues, bindings
	exchanges map[string]*exchange
	queues    map[string]*queue

	connMu sync.Mutex
	conns  map[*Connection]struct{}

	blockMu    sync.Mutex
	blocked    atomic.Bool
	unblocked  chan struct{} // closed when the current block ends
	blockEpoch uint64        // alarms raised so far; guarded by blockMu

	stats struct {
		published, routed, unroutable, returned, dropped, deadLettered atomic.Uint64
	}
	consumerSeq atomic.Uint64
}

// Stats counts what a broker did with published messages since it was
// created or last reset.
type Stats struct {
	// Published counts basic.publish calls that reached an existing exchange.
	Published uint64
	// Routed counts publishes that matched at least one queue.
	Routed uint64
	// Unroutable counts publishes that matched no queue, returned or not.
	Unroutable uint64
	// Returned counts unroutable mandatory publishes sent back to the publisher.
	Returned uint64
	// Dropped counts messages a queue discarded because it was full: publishes
	// it rejected (nacked in confirm mode, silently lost otherwise) and, under
	// drop-head overflow without a dead-letter exchange, messages dropped from
	// its head. It also counts dead-lettered messages that reached no queue:
	// their dead-letter exchange is missing or matched no queue, or every
	// queue matched would make a dead-letter cycle.
	Dropped uint64
	// DeadLettered counts messages republished through a dead-letter
	// exchange to at least one queue.
	DeadLettered uint64
}

// predeclared are the exchanges every RabbitMQ virtual host has.
var predeclared = []struct{ name, kind string }{
	{"amq.direct", kindDirect},
	{"amq.fanout", kindFanout},
	{"amq.topic", kindTopic},
	{"amq.headers", kindHeaders},
	{"amq.match", kindHeaders},
}

func newBroker(name string) *Broker {
	b := &Broker{
		name:      name,
		exchanges: make(map[string]*exchange),
		queues:    make(map[string]*queue),
		conns:     make(map[*Connection]struct{}),
	}
	b.predeclare()
	return b
}

// predeclare adds the predeclared exchanges. b.mu is held or b is new.
func (b *Broker) predeclare() {
	for _, p := range predeclared {
		b.exchanges[p.name] = &exchange{name: p.name, kind: p.kind, durable: true}
	}
}

// Name returns the broker's name, the NAME of memory://NAME.
func (b *Broker) Name() string { return b.name }

// Dial opens a connection to b.
func (b *Broker) Dial() (*Connection, error) {
	c := &Connection{b: b, channels: make(map[*Channel]struct{})}
	b.connMu.Lock()
	b.conns[c] = struct{}{}
	b.connMu.Unlock()
	return c, nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Published:    b.stats.published.Load(),
		Routed:       b.stats.routed.Load(),
		Unroutable:   b.stats.unroutable.Load(),
		Returned:     b.stats.returned.Load(),
		Dropped:      b.stats.dropped.Load(),
		DeadLettered: b.stats.deadLettered.Load(),
	}
}

// Connections returns how many connections to b are open. Tests use it to
// check that a client closed what it opened.
func (b *Broker) Connections() int {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	return len(b.conns)
}

func (b *Broker) connections() []*Connection {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	out := make([]*Connection, 0, len(b.conns))
	for c := range b.conns {
		out = append(out, c)
	}
	return out
}

// CloseAllConnections closes every connection as `rabbitmqctl
// close_all_connections reason` does: each connection, and each of its
// channels, is closed with the error 320 "CONNECTION_FORCED - reason".
func (b *Broker) CloseAllConnections(reason string) {
	for _, c := range b.connections() {
		c.shutdown(&amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - " + reason, Server: true})
	}
}

// SetBlocked raises (true) or clears (false) a resource alarm, as a RabbitMQ
// node low on memory does. While it is raised every publish blocks until it is
// cleared, the publish's context ends or its channel closes. The NotifyBlocked
// listeners of every open connection get Blocking{Active: true, Reason: "low
// on memory"} when it is raised; a connection opened while it is raised gets
// it when it first publishes, as RabbitMQ tells a connection it blocked. Every
// connection told gets Blocking{Active: false} when the alarm is cleared.
func (b *Broker) SetBlocked(active bool) {
	b.blockMu.Lock()
	defer b.blockMu.Unlock()
	if b.blocked.Load() == active {
		return
	}
	if active {
		b.blockEpoch++
		b.unblocked = make(chan struct{})
		b.blocked.Store(true)
	} else {
		b.blocked.Store(false)
		close(b.unblocked)
	}
	// Notify under blockMu so that every connection sees raise and clear in order.
	for _, c := range b.connections() {
		if active {
			b.tellBlockedLocked(c)
		} else if c.blockEpoch == b.blockEpoch {
			c.n.emit(event{kind: evBlock, block: amqp.Blocking{Active: false}})
		}
	}
}

// tellBlocked sends connection.blocked to c if an alarm is raised and c was
// not told of it yet.
func (b *Broker) tellBlocked(c *Connection) {
	b.blockMu.Lock()
	defer b.blockMu.Unlock()
	if b.blocked.Load() {
		b.tellBlockedLocked(c)
	}
}

// tellBlockedLocked is tellBlocked for a raised alarm. b.blockMu is held.
func (b *Broker) tellBlockedLocked(c *Connection) {
	if c.blockEpoch == b.blockEpoch {
		return
	}
	c.blockEpoch = b.blockEpoch
	c.n.emit(event{kind: evBlock, block: amqp.Blocking{Active: true, Reason: "low on memory"}})
}

// waitUnblocked returns once no alarm is raised, or with ctx.Err() or
// amqp.ErrClosed when ctx ends or done is closed first.
func (b *Broker) waitUnblocked(ctx context.Context, done <-chan struct{}) error {
	for b.blocked.Load() {
		b.blockMu.Lock()
		wait := b.unblocked
		blocked := b.blocked.Load()
		b.blockMu.Unlock()
		if !blocked {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return amqp.ErrClosed
		}
	}
	return nil
}

// Reset returns b to its initial state for test isolation: it closes every
// connection with 320 "CONNECTION_FORCED - broker reset", deletes every queue
// and every exchange except the predeclared ones, clears an alarm and zeroes
// the counters.
func (b *Broker) Reset() {
	b.CloseAllConnections("broker reset")
	b.SetBlocked(false)
	b.deleteAll()
	b.stats.published.Store(0)
	b.stats.routed.Store(0)
	b.stats.unroutable.Store(0)
	b.stats.returned.Store(0)
	b.stats.dropped.Store(0)
	b.stats.deadLettered.Store(0)
}

// deleteAll deletes every queue, cancelling the consumers of connections
// opened meanwhile, and every exchange except the predeclared ones.
func (b *Broker) deleteAll() {
	b.mu.Lock()
	var cons []*consumer
	for _, q := range b.queues {
		_, cs := b.deleteQueueLocked(q)
		cons = append(cons, cs...)
	}
	b.exchanges = make(map[string]*exchange)
	b.predeclare()
	b.mu.Unlock()
	for _, c := range cons {
		c.ch.forgetConsumer(c)
	}
}

// queueNamed returns the queue called name, or nil.
func (b *Broker) queueNamed(name string) *queue {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.queues[name]
}

// serverQueueName returns a new server-named queue name, as RabbitMQ makes
// them: "amq.gen-" and 22 base64url characters.
func serverQueueName() string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(r[:])
}

// deleteQueue removes q with its bindings and cancels its consumers; it
// returns the number of ready messages q held. b.mu is not held.
func (b *Broker) deleteQueue(q *queue) int {
	b.mu.Lock()
	if b.queues[q.name] != q {
		b.mu.Unlock()
		return 0
	}
	n, cons := b.deleteQueueLocked(q)
	b.mu.Unlock()
	for _, c := range cons {
		c.ch.forgetConsumer(c)
	}
	return n
}

// deleteQueueLocked removes q; b.mu is held. It returns the ready count and
// the consumers that were cancelled.
func (b *Broker) deleteQueueLocked(q *queue) (int, []*consumer) {
	delete(b.queues, q.name)
	for _, bd := range q.bindings {
		b.unbindLocked(bd, false)
	}
	q.bindings = nil
	q.mu.Lock()
	q.deleted = true
	n := q.msgs.len()
	q.msgs = deque[entry]{}
	cons := q.consumers
	q.consumers = nil
	for _, c := range cons {
		c.cancelled = true
		if c.idle {
			c.idle = false
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	q.mu.Unlock()
	return n, cons
}

// maybeAutoDelete deletes q if it is an auto-delete queue that lost its last
// consumer.
func (b *Broker) maybeAutoDelete(q *queue) {
	q.mu.Lock()
	unused := q.unused()
	q.mu.Unlock()
	if !unused {
		return
	}
	b.mu.Lock()
	var cons []*consumer
	if b.queues[q.name] == q {
		q.mu.Lock()
		unused = q.unused()
		q.mu.Unlock()
		if unused {
			_, cons = b.deleteQueueLocked(q)
		}
	}
	b.mu.Unlock()
	for _, c := range cons {
		c.ch.forgetConsumer(c)
	}
}

// unbindLocked removes a binding; b.mu is held. fromQueue says whether to
// remove it from the queue's list too. An auto-delete exchange that loses its
// last binding is deleted.
func (b *Broker) unbindLocked(bd *binding, fromQueue bool) {
	x := bd.ex
	x.removeBinding(bd)
	if fromQueue {
		bd.q.bindings = removeBinding(bd.q.bindings, bd)
	}
	if x.autoDelete && len(x.bindings) == 0 && b.exchanges[x.name] == x {
		b.deleteExchangeLocked(x)
	}
}

// deleteExchangeLocked removes x and its bindings; b.mu is held.
func (b *Broker) deleteExchangeLocked(x *exchange) {
	delete(b.exchanges, x.name)
	for _, bd := range x.bindings {
		bd.q.bindings = removeBinding(bd.q.bindings, bd)
	}
	x.bindings = nil
	x.direct = nil
}

// connectionClosed deletes the exclusive queues of c.
func (b *Broker) connectionClosed(c *Connection) {
	b.connMu.Lock()
	delete(b.conns, c)
	b.connMu.Unlock()
	b.mu.Lock()
	var cons []*consumer
	for _, q := range b.queues {
		if q.owner == c {
			_, cs := b.deleteQueueLocked(q)
			cons = append(cons, cs...)
		}
	}
	b.mu.Unlock()
	for _, cn := range cons {
		cn.ch.forgetConsumer(cn)
	}
}

// deadLetter republishes discarded messages to their queue's dead-letter
// exchange, as RabbitMQ does: routed with the dead-letter routing key or the
// message's own keys, with an x-death header recording why. No lock is held.
func (b *Broker) deadLetter(list []deadLetter) {
	for len(list) > 0 {
		var more []deadLetter
		for _, d := range list {
			if !d.q.hasDLX {
				continue
			}
			m := deadLettered(d.e.m, d.q, d.reason)
			keys := []string{m.key}
			if !d.q.hasDLRK {
				keys = append(keys, m.cc...)
			}
			b.mu.RLock()
			x := b.exchanges[d.q.dlx]
			var targets []*queue
			if d.q.dlx == "" {
				for _, k := range keys {
					if q := b.queues[k]; q != nil {
						targets = addQueue(targets, q)
					}
				}
			} else if x != nil {
				targets = x.route(keys, m.pub.Headers, nil)
				targets = b.alternate(x, keys, m.pub.Headers, targets)
			}
			b.mu.RUnlock()
			// RabbitMQ drops the message when the exchange is missing, when
			// it matches no queue and when it would loop.
			e := entry{m: m}
			sent := false
			for _, q := range targets {
				if cycle(m, q, d.reason) {
					continue
				}
				sent = true
				e.expires = expiry(q, m)
				q.enqueue(e, &more)
			}
			if sent {
				b.stats.deadLettered.Add(1)
			} else {
				b.stats.dropped.Add(1)
			}
		}
		list = more
	}
}

// cycle reports whether dead-lettering m into q would loop without any
// rejection in between; RabbitMQ drops the message then.
func cycle(m *message, q *queue, reason string) bool {
	if reason == "rejected" {
		return false
	}
	deaths, _ := m.pub.Headers["x-death"].([]any)
	seen := false
	for _, d := range deaths {
		t, _ := d.(amqp.Table)
		if t["reason"] == "rejected" {
			return false
		}
		if t["queue"] == q.name {
			seen = true
		}
	}
	return seen
}

// deadLettered returns the copy of m that is dead-lettered from q.
func deadLettered(m *message, q *queue, reason string) *message {
	h := copyTable(m.pub.Headers)
	if h == nil {
		h = amqp.Table{}
	}
	keys := make([]any, 0, 1+len(m.cc))
	keys = append(keys, m.key)
	for _, k := range m.cc {
		keys = append(keys, k)
	}
	now := time.Unix(time.Now().Unix(), 0)
	deaths, _ := h["x-death"].([]any)
	var found amqp.Table
	rest := make([]any, 0, len(deaths)+1)
	for _, d := range deaths {
		t, ok := d.(amqp.Table)
		if ok && found == nil && t["queue"] == q.name && t["reason"] == reason {
			found = t
			continue
		}
		rest = append(rest, d)
	}
	if found != nil {
		n, _ := asInt(found["count"])
		found["count"] = n + 1
		found["time"] = now
		found["exchange"] = m.exchange
		found["routing-keys"] = keys
	} else {
		found = amqp.Table{
			"count":        int64(1),
			"reason":       reason,
			"queue":        q.name,
			"time":         now,
			"exchange":     m.exchange,
			"routing-keys": keys,
		}
		if m.pub.Expiration != "" {
			found["original-expiration"] = m.pub.Expiration
		}
	}
	h["x-death"] = append([]any{found}, rest...)
	if _, ok := h["x-first-death-reason"]; !ok {
		h["x-first-death-reason"] = reason
		h["x-first-death-queue"] = q.name
		h["x-first-death-exchange"] = m.exchange
	}
	nm := &message{exchange: q.dlx, key: m.key, cc: m.cc, pub: m.pub, ttl: -1}
	if q.hasDLRK {
		nm.key = q.dlrk
		nm.cc = nil
	}
	nm.pub.Headers = h
	nm.pub.Expiration = ""
	return nm
}

// expiry returns when m expires in q, or 0.
func expiry(q *queue, m *message) int64 {
	ttl := q.ttl
	if m.ttl >= 0 && (ttl < 0 || m.ttl < ttl) {
		ttl = m.ttl
	}
	if ttl < 0 {
		return 0
	}
	return time.Now().Add(ttl).UnixNano()
}

// alternate routes through x's alternate exchange (and its alternates) when
// x matched no queue. b.mu is held for reading.
func (b *Broker) alternate(x *exchange, keys []string, h amqp.Table, dst []*queue) []*queue {
	for i := 0; len(dst) == 0 && i < 8; i++ {
		name, ok := x.args["alternate-exchange"].(string)
		if !ok {
			return dst
		}
		if x = b.exchanges[name]; x == nil {
			return dst
		}
		dst = x.route(keys, h, dst)
	}
	return dst
}
