package membroker

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Channel is a channel of a Connection, with the methods of *amqp091.Channel
// that OMQS uses and the semantics amqp091 has against RabbitMQ 3.10.
//
// A server error closes the channel (a connection error the connection):
// NotifyClose listeners get the *amqp.Error, synchronous methods return it,
// and every later call returns amqp.ErrClosed.
type Channel struct {
	conn *Connection
	b    *Broker

	done      chan struct{} // closed when the channel starts closing
	closed    atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup // consumer goroutines

	pubMu      sync.Mutex // serializes publishes: confirm tags follow call order
	pubClosed  bool
	confirming bool
	published  uint64
	routeBuf   []*queue
	keyBuf     []string

	mu          sync.Mutex
	closing     bool
	consumers   map[string]*consumer   // active consumers by tag
	live        map[*consumer]struct{} // consumers whose goroutine runs
	unacked     deque[pendingAck]      // by delivery tag, ascending
	settledHole int                    // settled records still in unacked
	lastTag     uint64
	prefetch    int // per-consumer limit for new consumers
	lastQueue   string

	gPrefetch atomic.Int64 // channel-wide limit (Qos global), 0 for none
	gUnacked  atomic.Int64 // unsettled manual-ack deliveries of the channel

	n notifier // NotifyClose, NotifyPublish and NotifyReturn listeners
}

// pendingAck is a delivery waiting for its ack.
type pendingAck struct {
	tag     uint64
	e       entry
	c       *consumer
	settled bool
}

func newChannel(c *Connection) *Channel {
	return &Channel{
		conn:      c,
		b:         c.b,
		done:      make(chan struct{}),
		consumers: make(map[string]*consumer),
		live:      make(map[*consumer]struct{}),
	}
}

// IsClosed reports whether the channel is closed.
func (ch *Channel) IsClosed() bool { return ch.closed.Load() }

// Close closes the channel: its consumers stop, their delivery channels and
// every Notify listener are closed, and unacknowledged deliveries go back to
// their queues marked redelivered. Closing a closed channel returns nil.
func (ch *Channel) Close() error {
	ch.shutdown(nil)
	return nil
}

// NotifyClose registers r to receive the error that closes the channel; r is
// closed when the channel closes. r should be buffered.
func (ch *Channel) NotifyClose(r chan *amqp.Error) chan *amqp.Error {
	return addListener(&ch.n, &ch.n.closes, r)
}

// NotifyPublish registers r for publisher confirms, sent in delivery tag
// order; r is closed when the channel closes.
func (ch *Channel) NotifyPublish(r chan amqp.Confirmation) chan amqp.Confirmation {
	return addListener(&ch.n, &ch.n.confirms, r)
}

// NotifyReturn registers r for unroutable mandatory publishes; r is closed
// when the channel closes.
func (ch *Channel) NotifyReturn(r chan amqp.Return) chan amqp.Return {
	return addListener(&ch.n, &ch.n.returns, r)
}

// precheck makes the client-side checks amqp091 makes before sending a
// method with arguments args and short strings short: the table's value
// types, the channel being open, and the lengths that the encoding limits
// (an error there closes the connection, see frameError).
func (ch *Channel) precheck(args amqp.Table, short ...string) error {
	if err := args.Validate(); err != nil {
		return err
	}
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	if err := checkShort(short...); err != nil {
		return ch.frameError(err)
	}
	if err := checkTableKeys(args); err != nil {
		return ch.frameError(err)
	}
	return nil
}

// fail closes the channel with a soft error, or the connection with a hard
// one, and returns err.
func (ch *Channel) fail(err *amqp.Error) *amqp.Error {
	if err == amqp.ErrClosed {
		return err
	}
	if softCode(err.Code) {
		ch.shutdown(err)
	} else {
		ch.conn.shutdown(err)
	}
	return err
}

// frameError handles a method amqp091 cannot encode: it returns the encoding
// error and, as amqp091 does, closes the connection with FRAME_ERROR.
func (ch *Channel) frameError(err error) error {
	ch.conn.shutdown(&amqp.Error{Code: amqp.FrameError, Reason: err.Error()})
	return err
}

// result turns a server error of a synchronous method into its return value:
// the error, or nil with noWait as the error then only closes the channel.
func (ch *Channel) result(err *amqp.Error, noWait bool) error {
	if err == nil {
		return nil
	}
	ch.fail(err)
	if noWait && err != amqp.ErrClosed {
		return nil
	}
	return err
}

// shutdown closes the channel with err (nil for a client close). It returns
// false if the channel was already closed. No lock may be held by the caller.
func (ch *Channel) shutdown(err *amqp.Error) bool {
	first := false
	ch.closeOnce.Do(func() {
		first = true
		ch.mu.Lock()
		ch.closing = true
		ch.closed.Store(true)
		ch.mu.Unlock()
		close(ch.done)
		// Let a publish in progress finish, so its confirm precedes the close.
		ch.pubMu.Lock()
		ch.pubClosed = true
		ch.pubMu.Unlock()
		ch.wg.Wait()
		live := ch.release()
		ch.conn.removeChannel(ch)
		ch.n.stop()
		ch.n.sendError(err)
		for _, c := range live {
			close(c.deliveries)
		}
		ch.n.finish()
	})
	return first
}

// release gives back what the closing channel holds: unacknowledged and
// in-flight deliveries return to their queues marked redelivered, consumers
// leave their queues. It returns the consumers whose delivery channel is still
// open. The consumer goroutines have stopped.
func (ch *Channel) release() []*consumer {
	ch.mu.Lock()
	recs := ch.unacked.drain(nil)
	live := make([]*consumer, 0, len(ch.live))
	for c := range ch.live {
		live = append(live, c)
	}
	ch.live = nil
	ch.consumers = nil
	ch.mu.Unlock()

	var g requeueGroups
	for _, r := range recs {
		if !r.settled {
			e := r.e
			e.redelivered = true
			e.count++
			g.add(r.c.q, e)
		}
	}
	var dead []deadLetter
	for _, c := range live {
		q := c.q
		q.mu.Lock()
		q.removeConsumer(c)
		c.cancelled = true
		out := c.outbox.drain(nil)
		q.dispatchLocked(&dead)
		q.mu.Unlock()
		for _, e := range out {
			if !c.noAck {
				e.redelivered = true
				e.count++
			}
			g.add(q, e)
		}
	}
	g.requeue(&dead)
	ch.b.deadLetter(dead)
	for _, c := range live {
		ch.b.maybeAutoDelete(c.q)
	}
	return live
}

// requeueGroups collects returned messages per queue, keeping their order.
type requeueGroups struct {
	qs    []*queue
	lists [][]entry
}

func (g *requeueGroups) add(q *queue, e entry) {
	for i, x := range g.qs {
		if x == q {
			g.lists[i] = append(g.lists[i], e)
			return
		}
	}
	g.qs = append(g.qs, q)
	g.lists = append(g.lists, []entry{e})
}

func (g *requeueGroups) requeue(dead *[]deadLetter) {
	for i, q := range g.qs {
		q.requeue(g.lists[i], dead)
	}
}

// consumerFinished is called by a cancelled consumer's goroutine once it
// handed over everything in flight.
func (ch *Channel) consumerFinished(c *consumer) {
	close(c.deliveries)
	ch.mu.Lock()
	delete(ch.live, c)
	ch.mu.Unlock()
}

// forgetConsumer drops the tag of a consumer the broker cancelled (its queue
// was deleted), so that the tag can be used again.
func (ch *Channel) forgetConsumer(c *consumer) {
	ch.mu.Lock()
	if ch.consumers[c.tag] == c {
		delete(ch.consumers, c.tag)
	}
	ch.mu.Unlock()
}

// reserveGlobal takes one unit of channel-wide prefetch credit.
func (ch *Channel) reserveGlobal() bool {
	limit := ch.gPrefetch.Load()
	if limit == 0 {
		ch.gUnacked.Add(1)
		return true
	}
	for {
		cur := ch.gUnacked.Load()
		if cur >= limit {
			return false
		}
		if ch.gUnacked.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// kick lets every queue this channel consumes from dispatch again, after
// channel-wide credit was freed.
func (ch *Channel) kick() {
	ch.mu.Lock()
	var qs []*queue
	for c := range ch.live {
		qs = addQueue(qs, c.q)
	}
	ch.mu.Unlock()
	var dead []deadLetter
	for _, q := range qs {
		q.mu.Lock()
		q.dispatchLocked(&dead)
		q.mu.Unlock()
	}
	ch.b.deadLetter(dead)
}

// record assigns delivery tags to a batch a consumer is about to hand over
// and, for manual acknowledgement, remembers the deliveries until settled. It
// returns the first tag.
func (ch *Channel) record(c *consumer, batch []entry) uint64 {
	ch.mu.Lock()
	first := ch.lastTag + 1
	ch.lastTag += uint64(len(batch))
	if !c.noAck {
		for i := range batch {
			ch.unacked.pushBack(pendingAck{tag: first + uint64(i), e: batch[i], c: c})
		}
	}
	ch.mu.Unlock()
	return first
}

// Qos sets the prefetch limit. With global false it applies to consumers
// started afterwards on this channel, each on its own; with global true it
// bounds the unacknowledged deliveries of the whole channel, as RabbitMQ
// interprets the flag. 0 means no limit. prefetchSize must be 0 (RabbitMQ
// closes the connection with 540 NOT_IMPLEMENTED otherwise).
func (ch *Channel) Qos(prefetchCount, prefetchSize int, global bool) error {
	if prefetchCount < 0 || prefetchSize < 0 {
		return fmt.Errorf("amqp: Qos values must be non-negative (got prefetchCount=%d, prefetchSize=%d)", prefetchCount, prefetchSize)
	}
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	if prefetchSize != 0 {
		return ch.fail(serverError(amqp.NotImplemented, "prefetch_size!=0 (%d)", uint32(prefetchSize)))
	}
	count := int(uint16(prefetchCount))
	if global {
		ch.gPrefetch.Store(int64(count))
		ch.kick()
		return nil
	}
	ch.mu.Lock()
	ch.prefetch = count
	ch.mu.Unlock()
	return nil
}

// Confirm puts the channel in confirm mode: every later publish gets the
// next delivery tag, from 1, and a Confirmation on the NotifyPublish
// listeners.
func (ch *Channel) Confirm(noWait bool) error {
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	ch.pubMu.Lock()
	ch.confirming = true
	ch.pubMu.Unlock()
	return nil
}

// GetNextPublishSeqNo returns the delivery tag the next publish will get in
// confirm mode: 1 before the first one, as amqp091 does.
func (ch *Channel) GetNextPublishSeqNo() uint64 {
	ch.pubMu.Lock()
	defer ch.pubMu.Unlock()
	return ch.published + 1
}

// uniqueConsumerTag makes a consumer tag as amqp091 does.
func (b *Broker) uniqueConsumerTag() string {
	suffix := "-" + strconv.FormatUint(b.consumerSeq.Add(1), 10)
	infix := os.Args[0]
	if len("ctag-")+len(infix)+len(suffix) > 255 {
		infix = "streadway/amqp"
	}
	return "ctag-" + infix + suffix
}

// Consume starts a consumer on queue and returns its deliveries. The
// delivery channel is unbuffered; it is closed after Cancel once the
// deliveries in flight were received, or at once when the channel closes.
// noLocal and args are accepted and ignored, as RabbitMQ ignores them.
func (ch *Channel) Consume(queue, consumer string, autoAck, exclusive, noLocal, noWait bool, args amqp.Table) (<-chan amqp.Delivery, error) {
	if consumer == "" {
		consumer = ch.b.uniqueConsumerTag()
	}
	if err := ch.precheck(args, queue, consumer); err != nil {
		return nil, err
	}
	deliveries := make(chan amqp.Delivery)
	if err := ch.consume(queue, consumer, autoAck, exclusive, deliveries); err != nil {
		ch.fail(err)
		if noWait && err != amqp.ErrClosed {
			close(deliveries)
			return deliveries, nil
		}
		return nil, err
	}
	return deliveries, nil
}

func (ch *Channel) consume(queue, tag string, autoAck, exclusive bool, deliveries chan amqp.Delivery) *amqp.Error {
	name, err := ch.resolveQueue(queue)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	if ch.closing {
		ch.mu.Unlock()
		return amqp.ErrClosed
	}
	if _, dup := ch.consumers[tag]; dup {
		ch.mu.Unlock()
		return serverError(amqp.NotAllowed, "attempt to reuse consumer tag '%s'", tag)
	}
	c := &consumer{
		ch:         ch,
		tag:        tag,
		noAck:      autoAck,
		exclusive:  exclusive,
		prefetch:   ch.prefetch,
		deliveries: deliveries,
		wake:       make(chan struct{}, 1),
	}
	ch.consumers[tag] = c
	ch.wg.Add(1)
	ch.mu.Unlock()

	undo := func(e *amqp.Error) *amqp.Error {
		ch.mu.Lock()
		delete(ch.consumers, tag)
		ch.mu.Unlock()
		ch.wg.Done()
		return e
	}
	q := ch.b.queueNamed(name)
	if q == nil {
		return undo(errNoQueue(name))
	}
	if q.owner != nil && q.owner != ch.conn {
		return undo(errLocked(name))
	}
	if q.quorum && ch.gPrefetch.Load() > 0 {
		return undo(serverError(amqp.NotImplemented, "%s does not support global qos", rs("queue", name)))
	}
	c.q = q
	var dead []deadLetter
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return undo(errNoQueue(name))
	}
	if q.exclusiveConsumer || (exclusive && len(q.consumers) > 0) {
		q.mu.Unlock()
		return undo(serverError(amqp.AccessRefused, "%s in exclusive use", rs("queue", name)))
	}
	q.consumers = append(q.consumers, c)
	q.hadConsumer = true
	if exclusive {
		q.exclusiveConsumer = true
	}
	ch.mu.Lock()
	ch.live[c] = struct{}{}
	ch.mu.Unlock()
	q.dispatchLocked(&dead)
	q.mu.Unlock()
	go c.run()
	ch.b.deadLetter(dead)
	return nil
}

// Cancel stops the consumer with tag consumer: it gets no more messages, its
// delivery channel is closed once the deliveries in flight were received, and
// its unacknowledged deliveries stay unacknowledged until settled or the
// channel closes. An unknown tag is not an error.
func (ch *Channel) Cancel(consumer string, noWait bool) error {
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	if err := checkShort(consumer); err != nil {
		return ch.frameError(err)
	}
	ch.mu.Lock()
	c := ch.consumers[consumer]
	delete(ch.consumers, consumer)
	ch.mu.Unlock()
	if c == nil {
		return nil
	}
	q := c.q
	var dead []deadLetter
	q.mu.Lock()
	q.removeConsumer(c)
	c.cancelled = true
	if c.idle {
		c.idle = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	q.dispatchLocked(&dead)
	q.mu.Unlock()
	ch.b.deadLetter(dead)
	ch.b.maybeAutoDelete(q)
	return nil
}

type settleMode uint8

const (
	settleAck settleMode = iota
	settleRequeue
	settleReject
)

// Ack acknowledges the delivery with tag, or with multiple every delivery
// up to and including it (all of them for tag 0). An unknown tag closes the
// channel with 406 PRECONDITION_FAILED, after Ack returned nil, as with
// RabbitMQ.
func (ch *Channel) Ack(tag uint64, multiple bool) error {
	return ch.settle(tag, multiple, settleAck)
}

// Nack rejects the delivery with tag, or with multiple every delivery up to
// it. requeue puts the messages back at the head of their queues marked
// redelivered; otherwise they are dead-lettered if their queue has a
// dead-letter exchange, else dropped.
func (ch *Channel) Nack(tag uint64, multiple, requeue bool) error {
	if requeue {
		return ch.settle(tag, multiple, settleRequeue)
	}
	return ch.settle(tag, multiple, settleReject)
}

// Reject is Nack of one delivery.
func (ch *Channel) Reject(tag uint64, requeue bool) error {
	return ch.Nack(tag, false, requeue)
}

// findTag returns the index in unacked of the unsettled delivery tag, or -1.
// ch.mu is held.
func (ch *Channel) findTag(tag uint64) int {
	lo, hi := 0, ch.unacked.len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if ch.unacked.at(mid).tag < tag {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < ch.unacked.len() {
		if p := ch.unacked.at(lo); p.tag == tag && !p.settled {
			return lo
		}
	}
	return -1
}

// compact drops settled records from the front of unacked, and rebuilds it
// when settled records in the middle are most of it. ch.mu is held.
func (ch *Channel) compact() {
	for ch.unacked.len() > 0 && ch.unacked.front().settled {
		ch.unacked.popFront()
		ch.settledHole--
	}
	if ch.settledHole > 64 && ch.settledHole > ch.unacked.len()/2 {
		var d deque[pendingAck]
		for i := 0; i < ch.unacked.len(); i++ {
			if p := ch.unacked.at(i); !p.settled {
				d.pushBack(*p)
			}
		}
		ch.unacked = d
		ch.settledHole = 0
	}
}

func (ch *Channel) settle(tag uint64, multiple bool, mode settleMode) error {
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	ch.mu.Lock()
	if ch.closing {
		ch.mu.Unlock()
		return amqp.ErrClosed
	}
	end := -1
	if multiple && tag == 0 {
		end = ch.unacked.len() - 1
	} else {
		end = ch.findTag(tag)
		if end < 0 {
			ch.mu.Unlock()
			ch.fail(serverError(amqp.PreconditionFailed, "unknown delivery tag %d", tag))
			return nil
		}
	}
	if !multiple {
		p := ch.unacked.at(end)
		rec := *p
		p.settled = true
		p.e = entry{}
		p.c = nil
		ch.settledHole++
		ch.compact()
		ch.mu.Unlock()
		ch.finish([]pendingAck{rec}, mode)
		return nil
	}
	var recs []pendingAck
	for i := 0; i <= end; i++ {
		p := ch.unacked.at(i)
		if p.settled {
			continue
		}
		recs = append(recs, *p)
		p.settled = true
		p.e = entry{}
		p.c = nil
		ch.settledHole++
	}
	ch.compact()
	ch.mu.Unlock()
	ch.finish(recs, mode)
	return nil
}

// finish completes settled deliveries on their queues.
func (ch *Channel) finish(recs []pendingAck, mode settleMode) {
	var (
		dead []deadLetter
		g    requeueGroups
	)
	for i := 0; i < len(recs); {
		// A run of deliveries from one consumer is settled under one lock.
		c := recs[i].c
		j := i
		for j < len(recs) && recs[j].c == c {
			j++
		}
		q := c.q
		n := int64(j - i)
		old := c.unacked.Add(-n) + n
		ch.gUnacked.Add(-n)
		switch mode {
		case settleReject:
			for _, r := range recs[i:j] {
				q.discard(r.e, "rejected", &dead)
			}
		case settleRequeue:
			for _, r := range recs[i:j] {
				e := r.e
				e.redelivered = true
				e.count++
				g.add(q, e)
			}
		}
		// The consumer was at its prefetch limit and now has room: give it
		// what waits. A publisher that found it full did so under q.mu, so
		// taking the lock here cannot miss its message.
		if c.prefetch > 0 && old >= int64(c.prefetch) && mode != settleRequeue {
			q.mu.Lock()
			q.dispatchLocked(&dead)
			q.mu.Unlock()
		}
		i = j
	}
	g.requeue(&dead)
	if ch.gPrefetch.Load() > 0 {
		ch.kick()
	}
	ch.b.deadLetter(dead)
}

// resolveQueue applies RabbitMQ's shortcut: the empty queue name means the
// queue most recently declared on the channel.
func (ch *Channel) resolveQueue(name string) (string, *amqp.Error) {
	if name != "" {
		return name, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.lastQueue == "" {
		return "", errNoPreviousQueue()
	}
	return ch.lastQueue, nil
}

func (ch *Channel) setLastQueue(name string) {
	ch.mu.Lock()
	ch.lastQueue = name
	ch.mu.Unlock()
}
