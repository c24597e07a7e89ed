package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/transport"
)

// DefaultConcurrency is how many callbacks an AsyncConsumer runs at once
// unless WithConcurrency says otherwise.
const DefaultConcurrency = 8

// SyncConsumer receives the deliveries of one queue and hands them to its
// callback one at a time, in the order the broker sent them.
//
// Its life is NewSyncConsumer, Run (which blocks), and Stop from another
// goroutine (or the end of Run's context). A consumer runs once: it cannot be
// run again after Run returned.
//
// # Acknowledgements
//
// By default a delivery is acknowledged after the callback returns nil,
// rejected (dead-lettered where the queue has a dead-letter exchange) when it
// returns an error, requeued when it returns an error made with Requeue, and
// retried later when it returns RetryAfter (see Delayed retries). A
// panic in the callback is recovered, logged with its stack and treated as a
// rejection; the consumer goes on with the next delivery. A message requeued
// more than MAX_REDELIVERIES times is rejected instead. A callback that gives
// up because its context was cancelled (it returns an error wrapping the
// context's error) has its delivery requeued: it was not handled. With
// WithNoAck(true) the broker considers every delivery acknowledged when it
// sends it, the callback's result only gets logged, and Stop hands the
// deliveries already received to the callback before it returns (they exist
// nowhere else; see Run for a callback that gives up on its context).
//
// # Without a callback
//
// A consumer does not consume until it has a callback. Run connects,
// declares and binds the queue, and waits (Ready false) until WithCallback
// or SetCallback gives it one; then it subscribes. Messages published in
// the meantime wait in the queue (a server-named queue exists from then on,
// so it holds them too) and reach the callback once it is set.
// SetCallback(nil) while Run runs stops taking new deliveries: the
// subscription is cancelled, the callbacks in flight finish and are
// settled, the deliveries received but not handled go back to the queue,
// and the consumer waits on a new connection, queue declared and Ready
// false, until a callback is set again. (A server-named queue is deleted
// with that connection: what it held is gone, as on a reconnect.)
//
// # Delayed retries
//
// A callback that returns RetryAfter(err, d) has its message handed to a
// callback again after at least d (2d for the next retry, and so on). The
// consumer publishes a copy of the delivery, with RetriesHeader counting
// the retries, to a retry queue "<queue>.retry.<delay>" it declares (TTL of
// that delay, dead-lettered back onto its queue through the default
// exchange), on a second channel of its connection in confirm mode, and
// acknowledges the delivery only once the broker confirmed the copy. The
// copy comes back to the end of the queue: it is delivered after the
// messages that arrived meanwhile, so retries change the order. Retries and
// requeues together count against MAX_REDELIVERIES; past it the delivery is
// rejected. If the copy cannot be published (the channel or connection
// fails, the broker nacks it), the delivery is requeued at once instead. A
// crash between the confirm and the acknowledgement leaves both the copy and
// the delivery: the callback sees the message twice (at least once, as
// below). The Delivery of a retried message has the exchange and routing key
// it was first published with, and RetriesHeader in Headers. The retry
// queues are durable when the queue is (exclusive, deleted with the
// connection, for a server-named queue); they stay on the broker, empty,
// after the consumer stops. Publishing a retry on the consumer's connection
// means that while the broker blocks publishers (a memory or disk alarm)
// that connection is blocked too, acknowledgements included.
//
// # Reconnects and duplicates
//
// When the broker closes the connection or the channel, or cancels the
// subscription, Ready turns false and the callbacks still running have their
// context cancelled: their deliveries go back to the queue anyway (a closed
// channel cannot acknowledge them). With WithNoAck(true) their context stays
// live, since those deliveries exist nowhere else. Once the callbacks have
// returned, the consumer reconnects (at once, then every RECONNECT_INTERVAL),
// declares and binds its queue again and resumes consuming; a callback that
// ignores its context delays the reconnect. After a session that lasted less
// than a second it first waits RECONNECT_INTERVAL, twice as long after each
// further such session in a row, up to 30 s (or RECONNECT_INTERVAL when
// longer); after five in a row it reports that a delivery the client cannot
// parse may be at the head of the queue (see the README's poison messages). (When the broker cancels the
// subscription while every handler is in a callback, the consumer learns it
// when one of them returns.) Deliveries that were not acknowledged when the
// connection dropped go back to the queue, so delivery is at least once: a
// callback can see a message again, with Delivery.Redelivered set. Use
// Delivery.MessageID to drop duplicates where that matters. A server-named
// queue (WithQueue("")) goes away with the connection: the consumer gets a
// new one and what was published in between is not in it. After RECONNECT_TIMES
// consecutive failed attempts Run returns an error.
//
// # Goroutines
//
// Run owns every goroutine the consumer starts (the handler that runs the
// callback, the one that calls the WithErrorHandler function) and returns
// only after they have ended, so a callback that never returns keeps Run
// from returning: callbacks should give up when their context is cancelled.
// The methods are safe for concurrent use.
type SyncConsumer struct{ *consumer }

// AsyncConsumer is a SyncConsumer that runs up to WithConcurrency callbacks
// at once (DefaultConcurrency by default), on that many goroutines owned by
// Run. Deliveries are handed out in the broker's order, but callbacks running
// at the same time finish in any order: there is no ordering promise across
// handlers. Its prefetch is at least its concurrency.
//
// Everything else (acknowledgements, reconnects, Stop) works as for
// SyncConsumer. The methods are safe for concurrent use; the callback must be
// safe to call from several goroutines at once.
type AsyncConsumer struct{ *consumer }

// LogMsgConsumer receives log records published by a Manager's log worker:
// its queue (QUEUE of [LogConsumer], "omqs.queue.log" by default, not durable
// unless WithQueueDurable(true)) is bound to the durable topic exchange
// "omqs.exchange.log" with the keys given to NewLogMsgConsumer, such as
// "error", "*" or "#".
//
// It runs one callback at a time unless WithConcurrency says otherwise, and
// otherwise works as SyncConsumer (see there for acknowledgements, reconnects
// and Stop). The methods are safe for concurrent use.
type LogMsgConsumer struct{ *consumer }

// EventMsgConsumer receives events published by a Manager's event worker:
// its durable queue (QUEUE of [EventConsumer], "omqs.queue.event" by default)
// is bound to the durable topic exchange "omqs.exchange.event" with the keys
// of WithKeys, or [EventConsumer] KEYS, or DefaultEventKey. A named queue is
// always durable, so events wait for a consumer that is down; WithQueue("")
// gives the consumer a server-named queue of its own instead (exclusive,
// deleted with its connection), which sees a copy of each event and takes
// nothing from the queues other consumers read.
//
// It runs one callback at a time unless WithConcurrency says otherwise, and
// otherwise works as SyncConsumer (see there for acknowledgements, reconnects
// and Stop). The methods are safe for concurrent use.
type EventMsgConsumer struct{ *consumer }

// NewSyncConsumer builds a consumer of the queue "omqs.default.topicQueue"
// bound with the key "omqs.default.syncPublisher.key" to the topic exchange
// "omqs.default.topicExchange" (none of them durable), unless options or
// WithSection("LogConsumer"/"EventConsumer") say otherwise. WithQueue("")
// asks for a server-named, exclusive queue that is deleted when the consumer
// disconnects.
//
// Options that do not apply, a nil callback, a negative prefetch or a
// concurrency other than 1 return an error wrapping ErrInvalidConfig. It does
// not connect: call Run.
func NewSyncConsumer(opts ...ConsumerOption) (*SyncConsumer, error) {
	c, err := newConsumer("SyncConsumer", opts, consumerPreset{sync: true})
	if err != nil {
		return nil, err
	}
	return &SyncConsumer{c}, nil
}

// NewAsyncConsumer builds a consumer like NewSyncConsumer that runs up to
// WithConcurrency callbacks at once (DefaultConcurrency by default). Its
// prefetch is raised to its concurrency when it is lower (0, no limit, stays).
func NewAsyncConsumer(opts ...ConsumerOption) (*AsyncConsumer, error) {
	c, err := newConsumer("AsyncConsumer", opts, consumerPreset{concurrency: DefaultConcurrency})
	if err != nil {
		return nil, err
	}
	return &AsyncConsumer{c}, nil
}

// NewLogMsgConsumer builds a consumer of log records bound with keys, which
// are topic patterns ("error", "*.debug", "#"). When keys is empty the keys
// come from WithKeys, or [LogConsumer] KEYS, or DefaultLogKey; giving both
// keys and WithKeys is an error. Every other setting comes from options, then
// the [LogConsumer] section, then the defaults. It does not connect: call Run.
func NewLogMsgConsumer(keys []string, opts ...ConsumerOption) (*LogMsgConsumer, error) {
	c, err := newConsumer("LogMsgConsumer", opts, consumerPreset{
		concurrency: 1, keys: keys, fallbackKey: DefaultLogKey,
	})
	if err != nil {
		return nil, err
	}
	return &LogMsgConsumer{c}, nil
}

// NewEventMsgConsumer builds a consumer of events. Its queue is durable;
// WithQueueDurable(false) is an error. Keys are optional (WithKeys, or
// [EventConsumer] KEYS, or DefaultEventKey). Every other setting comes from
// options, then the [EventConsumer] section, then the defaults. It does not
// connect: call Run.
func NewEventMsgConsumer(opts ...ConsumerOption) (*EventMsgConsumer, error) {
	c, err := newConsumer("EventMsgConsumer", opts, consumerPreset{
		concurrency: 1, fallbackKey: DefaultEventKey, durableQueue: true,
	})
	if err != nil {
		return nil, err
	}
	return &EventMsgConsumer{c}, nil
}

// consumerPreset is what distinguishes the four public consumer types.
type consumerPreset struct {
	sync         bool     // exactly one callback at a time
	concurrency  int      // default concurrency
	keys         []string // NewLogMsgConsumer's argument
	fallbackKey  string   // when neither options nor the section name keys
	durableQueue bool     // the queue must be durable
}

// consumerState is where a consumer is in its life.
type consumerState int

const (
	consumerNew consumerState = iota
	consumerRunning
	consumerDone // Run returned, or Stop was called before Run
)

// consumer is the machinery shared by the four public consumer types.
type consumer struct {
	name        string
	who         string // the type and name, for messages
	kind        string // the type, e.g. "LogMsgConsumer"
	topo        topology
	noAck       bool
	prefetch    int
	concurrency int
	maxBody     int // MAX_BODY_SIZE: larger deliveries are refused
	dialer      *reconnect.Dialer
	backoff     reconnect.Backoff // spaces out reconnects after sessions that die young; used by Run
	log         *slog.Logger
	ownLog      *LogManager
	rep         *reporter // Run closes it before it returns
	redeliv     redeliveryTable

	cb       atomic.Pointer[Callback]
	cbSet    chan struct{} // signalled (capacity 1) when SetCallback changes cb
	dedup    *dedupWindow  // nil: no de-duplication
	st       consumerCounters
	ready    atomic.Bool
	inflight atomic.Int64 // callbacks running
	lost     atomic.Int64 // auto-acknowledged deliveries whose callback gave up
	tooBig   atomic.Int64 // deliveries refused for a body over maxBody
	obs      consumerObs  // counts for the observer, and its hooks

	mu       sync.Mutex // guards what follows
	state    consumerState
	sess     *consumerSession
	cbCancel context.CancelFunc

	quit       context.Context // cancelled when Stop begins
	quitCancel context.CancelFunc
	runDone    chan struct{} // closed when Run returns
	stopOnce   sync.Once
	stopErr    error
	logOnce    sync.Once
}

// consumerSession is one connection with its channel and subscription.
type consumerSession struct {
	conn       transport.Conn
	ch         transport.Channel
	deliveries <-chan amqp.Delivery
	tag        string
	queue      string
	chClose    chan *amqp.Error
	connClose  chan *amqp.Error
	stopping   atomic.Bool // handlers take no new delivery
	acks       *acker      // settles the deliveries (nil with auto-ack)
	retry      *retrier    // publishes RetryAfter's copies
}

// callbackCtxKey marks the context handed to callbacks, so that Stop called
// with it does not wait for its own caller.
type callbackCtxKey struct{}

// newConsumer builds the consumer of the constructor "New"+kind. Which
// options and sections it accepts is in ctorRules. It starts no goroutine.
func newConsumer(kind string, opts []Option, p consumerPreset) (*consumer, error) {
	ctor := "New" + kind
	s, err := buildSettings(ctor, opts)
	if err != nil {
		return nil, err
	}
	invalid := func(format string, args ...any) error { return invalidConfig(ctor, format, args...) }

	// The section: the constructor's, unless WithSection named another
	// (buildSettings set and checked it).
	sec := s.section
	var cc ConsumerConfig
	switch sec {
	case "":
		cc = ConsumerConfig{
			Exchange: DefaultExchange, ExchangeType: "topic",
			Queue: DefaultQueue, Keys: []string{DefaultRoutingKey},
			Prefetch: DefaultPrefetch, MaxRedeliveries: DefaultMaxRedeliveries,
			MaxBodySize: MaxBodySize,
		}
	case "LogConsumer":
		cc = s.cfg.LogConsumer
	case "EventConsumer":
		cc = s.cfg.EventConsumer
	default:
		return nil, invalid("[%s] is not a consumer section", sec)
	}
	t := topology{
		exchange: cc.Exchange, kind: cc.ExchangeType, durable: cc.ExchangeDurable,
		keys: append([]string(nil), cc.Keys...),
	}
	t.setQueue(cc.QueueConfig())
	if t.kind == "" {
		t.kind = "topic"
	}
	if t.queueType == "" {
		t.queueType = "classic"
	}
	s.overrideTopology(&t)

	// Keys: NewLogMsgConsumer's argument, then WithKeys, then the section,
	// then the preset's fallback.
	if len(p.keys) > 0 {
		if s.keysSet {
			return nil, invalid("keys were given both as the argument and with WithKeys; give them once")
		}
		for _, k := range p.keys {
			if err := checkKey(k); err != nil {
				return nil, invalid("keys: %v", err)
			}
		}
		t.keys = append([]string(nil), p.keys...)
	}
	if len(t.keys) == 0 && !s.keysSet && p.fallbackKey != "" {
		t.keys = []string{p.fallbackKey}
	}

	// A named event queue is always durable; a server-named one
	// (WithQueue("")) is the consumer's own and goes away with it.
	if p.durableQueue && t.queue != "" {
		if s.queueDurable != nil && !*s.queueDurable {
			return nil, invalid("WithQueueDurable(false): the event queue is always durable, so that events published while no consumer runs are kept")
		}
		t.queueDurable = true
	}
	if t.queue == "" {
		// Server-named, exclusive, deleted with the connection.
		if t.queueDurable && s.queueDurable != nil && *s.queueDurable {
			return nil, invalid("a server-named queue (WithQueue(\"\")) cannot be durable")
		}
		if t.queueType == "quorum" {
			return nil, invalid("a server-named queue (WithQueue(\"\")) cannot be a quorum queue")
		}
		t.queueDurable = false
	}
	if err := checkQueue(ctor, t); err != nil {
		return nil, err
	}

	c := &consumer{name: s.name, topo: t, noAck: s.noAck}
	if c.name == "" {
		c.name = kind
	}
	c.who, c.kind = kind, kind
	if c.name != kind {
		c.who = fmt.Sprintf("%s %q", kind, c.name)
	}

	c.concurrency = p.concurrency
	if s.concurrency != 0 {
		if p.sync && s.concurrency != 1 {
			return nil, invalid("WithConcurrency(%d): a SyncConsumer runs one callback at a time; use NewAsyncConsumer", s.concurrency)
		}
		c.concurrency = s.concurrency
	}
	if c.concurrency < 1 {
		c.concurrency = 1
	}

	c.prefetch = cc.Prefetch
	if s.prefetch != nil {
		c.prefetch = *s.prefetch
	}
	if c.prefetch < 0 {
		return nil, invalid("PREFETCH %d is negative", c.prefetch)
	}
	if c.prefetch != 0 && c.prefetch < c.concurrency {
		c.prefetch = c.concurrency
	}

	maxRedeliveries := cc.MaxRedeliveries
	if s.maxRedeliveries != nil {
		maxRedeliveries = *s.maxRedeliveries
	}
	if maxRedeliveries < 0 {
		return nil, invalid("MAX_REDELIVERIES %d is negative", maxRedeliveries)
	}
	c.redeliv.init(maxRedeliveries, redeliveryTableSize)

	c.maxBody = cc.MaxBodySize
	if s.maxBodySize != 0 {
		c.maxBody = s.maxBodySize
	}

	dedupSize, dedupWindow := cc.DedupSize, cc.DedupWindow
	if s.dedupSet {
		dedupSize, dedupWindow = s.dedupSize, s.dedupWindow
	}
	if dedupSize > 0 {
		c.dedup = newDedupWindow(dedupSize, dedupWindow)
	}

	// A named, non-durable queue expires once unused (x-expires), so that
	// one its reader left does not fill up.
	expires := cc.QueueExpires
	if s.queueExpires != nil {
		expires = *s.queueExpires
		if expires > 0 && (c.topo.queue == "" || c.topo.queueDurable) {
			return nil, invalid("WithQueueExpires(%v): only a named, non-durable queue expires (queue %q, durable=%v)", expires, c.topo.queue, c.topo.queueDurable)
		}
	}
	if expires > 0 && c.topo.queue != "" && !c.topo.queueDurable {
		c.topo.expires = max(expires, time.Millisecond)
	}

	c.cbSet = make(chan struct{}, 1)
	if s.callback != nil {
		cb := s.callback
		c.cb.Store(&cb)
	}

	eps, err := transport.ParseURLs(s.cfg.Global.MQURL)
	if err != nil {
		return nil, invalid("MQURL: %v", err)
	}
	if c.ownLog, err = s.ownLogger(ctor, c.name); err != nil {
		return nil, err
	}
	c.log = s.logger
	c.rep = newReporter(c.log, c.name, s.onError, 64)
	if t.queue == EventQueue && slices.ContainsFunc(t.keys, func(k string) bool { return k != DefaultEventKey }) {
		c.log.Warn("omqs: consumer binds keys other than "+DefaultEventKey+" to the shared queue "+EventQueue+
			": every consumer of that queue takes messages of all its keys, so consumers with different keys take each other's events; give this consumer a queue of its own with WithQueue",
			"consumer", c.name, "keys", t.keys)
	}
	if p.durableQueue && !cc.QueueDurable && s.queueDurable == nil {
		c.log.Warn(fmt.Sprintf("omqs: [%s] QUEUE_DURABLE is false; the event queue is declared durable anyway", sec), "consumer", c.name)
	}
	c.dialer = &reconnect.Dialer{
		Endpoints: eps,
		Options:   transport.DialOptions{Name: c.name, TLS: s.tls},
		Interval:  s.cfg.Global.ReconnectInterval,
		Times:     s.cfg.Global.ReconnectTimes,
		Logger:    componentLogger(c.log, "consumer", c.name, kind),
	}
	c.backoff = reconnect.Backoff{Interval: s.cfg.Global.ReconnectInterval}
	c.quit, c.quitCancel = context.WithCancel(context.Background())
	c.runDone = make(chan struct{})
	c.observe(s, kind)
	return c, nil
}

// The methods below are those of the four public consumer types, which
// embed *consumer. Every other method of consumer is unexported, so that
// nothing else is promoted to them.

// errZeroConsumer is what the methods of a consumer value that no
// constructor made (a zero SyncConsumer{}) return.
var errZeroConsumer = fmt.Errorf("%w: a consumer must be made by its New...Consumer constructor", ErrInvalidConfig)

// Run connects, declares the exchange, the queue and its bindings, and
// consumes until ctx ends or Stop is called; then it cancels the
// subscription, waits for the callbacks in flight, settles their deliveries
// and closes the connection. It blocks all that time and returns nil, also
// when ctx ends or Stop is called before the first connection succeeded.
//
// An unreachable broker is retried every RECONNECT_INTERVAL up to
// RECONNECT_TIMES. Run returns an error when the first connection fails for
// good (wrong credentials: ErrConnection; a declaration the broker refuses,
// such as a queue that exists with other settings: ErrInvalidQueue), or after
// RECONNECT_TIMES consecutive failed reconnect attempts (ErrConnection).
// Calling Run while it runs returns an error wrapping ErrRunning; calling it
// after it returned, or after Stop, returns ErrStopped.
//
// Callbacks get a context derived from ctx that is also cancelled when Stop's
// context ends.
//
// With WithNoAck(true), the deliveries received but not yet handled when ctx
// ends are still handed to the callback, with its context already cancelled.
// The broker forgot them when it sent them, so a callback that gives up on
// its context loses the message: each loss is logged at ERROR, and before it
// returns Run passes their count to the error handler. Stop instead hands
// them over with a live context, until Stop's own context ends.
func (c *consumer) Run(ctx context.Context) error {
	if c == nil {
		return errZeroConsumer
	}
	return c.run(ctx)
}

// Stop cancels the subscription (no new deliveries), waits for the
// callbacks in flight to return and settles their deliveries, closes the
// channel and the connection (deliveries received but not handled go back
// to the queue) and waits for Run to return. If ctx ends first, Stop cancels
// the callbacks' context, closes the connection anyway and returns an error
// saying how many callbacks were still running; Run returns once they have.
//
// Stop is idempotent and safe for concurrent use. A callback that calls Stop
// must pass its own context (Stop then starts the shutdown and returns without
// waiting for itself); with another context it waits until that context ends.
func (c *consumer) Stop(ctx context.Context) error {
	if c == nil {
		return errZeroConsumer
	}
	return c.stop(ctx)
}

// Ready reports whether the consumer is connected, its queue declared and
// bound, and its subscription active. It is false before Run, while
// reconnecting and after Stop. It turns true on each connection before the
// first callback of that connection runs.
func (c *consumer) Ready() bool { return c != nil && c.ready.Load() }

// SetCallback sets the callback for the deliveries that arrive from now on
// (the ones running finish with the old callback). It is safe to call before
// and during Run, from any goroutine. A consumer without a callback does not
// consume: Run waits for one with the queue declared and bound, and a nil cb
// while Run consumes stops taking new deliveries until a callback is set
// again (see "Without a callback" at SyncConsumer).
func (c *consumer) SetCallback(cb Callback) {
	if c == nil {
		return
	}
	if cb == nil {
		c.cb.Store(nil)
	} else {
		c.cb.Store(&cb)
	}
	select {
	case c.cbSet <- struct{}{}:
	default: // a change is signalled already: the reader loads cb anew
	}
}

// run is Run of every consumer type. It owns the session and the handlers.
func (c *consumer) run(ctx context.Context) (err error) {
	c.mu.Lock()
	switch c.state {
	case consumerRunning:
		c.mu.Unlock()
		return errorOf(c.who, fmt.Errorf("%w: Run was called while it runs", ErrRunning))
	case consumerDone:
		c.mu.Unlock()
		return errorOf(c.who, ErrStopped)
	}
	c.state = consumerRunning
	cbCtx, cbCancel := context.WithCancel(context.WithValue(ctx, callbackCtxKey{}, c))
	c.cbCancel = cbCancel
	c.mu.Unlock()

	// lctx ends when ctx ends or Stop begins.
	lctx, lcancel := context.WithCancel(ctx)
	stopWatch := context.AfterFunc(c.quit, lcancel)
	defer func() {
		stopWatch()
		lcancel()
		cbCancel()
		c.ready.Store(false)
		if n := c.lost.Load(); n > 0 {
			c.rep.report(errorOf(c.who, fmt.Errorf("%d auto-acknowledged deliveries lost: their callbacks gave up when their context ended", n)))
		}
		c.mu.Lock()
		c.state = consumerDone
		c.mu.Unlock()
		c.rep.close()
		c.closeLog()
		close(c.runDone)
	}()

	sess, err := c.connect(lctx, true)
	for {
		if err != nil {
			if lctx.Err() != nil {
				return nil
			}
			return connectError(c.who, err)
		}
		if !c.install(sess) {
			// Stop began while connecting.
			_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
			return nil
		}
		began, settledBefore := time.Now(), c.settledCount()
		cause := c.session(lctx, cbCtx, sess)
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
		if lctx.Err() != nil {
			return nil
		}
		if errors.Is(cause, errNoCallback) {
			sess, err = c.connect(lctx, false)
			continue
		}
		if c.settledCount() != settledBefore {
			// The session settled deliveries: whatever ended it is not
			// one message coming back at each reconnect.
			c.backoff.Reset()
		}
		wait, streak := c.backoff.Ended(time.Since(began), true)
		c.rep.report(errorOf(c.who, fmt.Errorf("%w; reconnecting every %v", cause, c.dialer.Interval)))
		if streak == reconnect.Streak {
			c.rep.report(errorOf(c.who, fmt.Errorf("%w: the connection closed %d times in a row within %v of opening (last: %v); "+
				"a delivery this client cannot parse (headers nested deeper than 32 levels or with more than 8192 entries) "+
				"may be at the head of queue %q, and it comes back at each reconnect: reconnects now back off up to %v; "+
				"a dead-letter exchange and a quorum queue's delivery limit (QUEUE_TYPE = quorum, DELIVERY_LIMIT) "+
				"make the broker dead-letter it after that many attempts",
				ErrConnection, streak, reconnect.Young, cause, sess.queue, max(reconnect.MaxBackoff, c.dialer.Interval))))
		}
		if wait > 0 && !reconnect.Sleep(lctx, wait) {
			return nil
		}
		sess, err = c.connect(lctx, false)
		if err == nil {
			c.obs.reconnects.Add(1)
			c.log.Info("omqs: consumer reconnected", "consumer", c.name, "kind", c.kind, "queue", sess.queue)
		}
	}
}

// install makes sess the current session unless Stop began.
func (c *consumer) install(sess *consumerSession) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.quit.Err() != nil {
		return false
	}
	c.sess = sess
	return true
}

// connect dials and sets up a session: channel, topology, Qos, subscription.
func (c *consumer) connect(ctx context.Context, failFast bool) (*consumerSession, error) {
	var sess *consumerSession
	err := connectChannel(ctx, c.dialer, failFast, func(conn transport.Conn, ch transport.Channel) error {
		var err error
		s := &consumerSession{
			conn:      conn,
			ch:        ch,
			chClose:   ch.NotifyClose(make(chan *amqp.Error, 1)),
			connClose: conn.NotifyClose(make(chan *amqp.Error, 1)),
		}
		if s.queue, err = c.declare(ch); err != nil {
			return err
		}
		s.retry = &retrier{conn: conn, queue: s.queue, durable: c.topo.queueDurable, exclusive: c.topo.queue == ""}
		if !c.noAck {
			if err := ch.Qos(c.prefetch, 0, false); err != nil {
				return fmt.Errorf("%w: set prefetch %d: %w", ErrInvalidChannel, c.prefetch, err)
			}
			s.acks = newAcker(ch, ackBatchFor(c.prefetch), func(err error, tag uint64, n int) {
				c.log.Warn("omqs: could not acknowledge deliveries; the broker will deliver them again", "consumer", c.name,
					"deliveries", n, "up_to_tag", tag, "error", err.Error())
			})
		}
		sess = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// declare declares the dead-letter exchange, the exchange, the queue and its
// bindings, and returns the queue's name (chosen by the server when the
// configured name is "").
func (c *consumer) declare(ch transport.Channel) (string, error) {
	t := c.topo
	if t.queue != "" {
		return t.queue, t.declare(ch)
	}
	exchangeOnly := t
	exchangeOnly.queue = ""
	if err := exchangeOnly.declare(ch); err != nil {
		return "", err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, t.arguments())
	if err != nil {
		return "", fmt.Errorf("%w: declare a server-named queue: %w", ErrInvalidQueue, err)
	}
	if err := t.bind(ch, q.Name); err != nil {
		return "", err
	}
	return q.Name, nil
}

// errNoCallback ends a session whose callback was removed (SetCallback(nil)).
var errNoCallback = errors.New("no callback")

// session waits for a callback, subscribes and serves sess. It returns
// what serve returns, or why the session ended before it served.
func (c *consumer) session(lctx, cbCtx context.Context, sess *consumerSession) error {
	if cause := c.awaitCallback(lctx, sess); cause != nil || lctx.Err() != nil {
		_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
		return cause
	}
	sess.tag = consumerTag(c.name)
	var err error
	sess.deliveries, err = sess.ch.Consume(sess.queue, sess.tag, c.noAck, false, false, false, nil)
	if err != nil {
		_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
		return fmt.Errorf("%w: consume from queue %q: %w", ErrInvalidQueue, sess.queue, err)
	}
	return c.serve(lctx, cbCtx, sess)
}

// awaitCallback returns once the consumer has a callback, nil; or when lctx
// ends, nil; or with the cause when sess closes first.
func (c *consumer) awaitCallback(lctx context.Context, sess *consumerSession) error {
	for logged := false; c.cb.Load() == nil; logged = true {
		if !logged {
			c.log.Info("omqs: queue declared and bound; not consuming until a callback is set (WithCallback or SetCallback)",
				"consumer", c.name, "queue", sess.queue)
		}
		select {
		case <-c.cbSet:
		case <-lctx.Done():
			return nil
		case connErr := <-sess.connClose:
			return closeCause(sess, connErr, nil)
		case chErr := <-sess.chClose:
			return closeCause(sess, nil, chErr)
		}
	}
	return nil
}

// consumerTag is unique per subscription and at most 255 bytes.
func consumerTag(name string) string {
	id := newMessageID()
	if len(name)+1+len(id) > MaxKeyLen {
		name = name[:MaxKeyLen-1-len(id)]
	}
	return name + "." + id
}

// serve runs the handlers on sess until the subscription ends (returning the
// cause) or lctx ends (returning nil after a graceful stop).
func (c *consumer) serve(lctx, cbCtx context.Context, sess *consumerSession) error {
	// sessCtx tells the callbacks that the subscription ended under them.
	sessCtx, sessCancel := context.WithCancel(cbCtx)
	defer sessCancel()
	var left atomic.Int32
	left.Store(int32(c.concurrency))
	handlersDone := make(chan struct{})
	ended := make(chan struct{}) // closed when the first handler ends
	var endOnce sync.Once
	// Ready turns true before the handlers start: the subscription is active
	// (Consume returned) and deliveries may already wait, so the first
	// callback can run as soon as a handler does.
	c.ready.Store(true)
	for range c.concurrency {
		go func() {
			defer func() {
				if left.Add(-1) == 0 {
					close(handlersDone)
				}
			}()
			c.handle(sessCtx, sess)
			// The delivery channel closed: the subscription is over, even
			// while other handlers still run a callback.
			endOnce.Do(func() { close(ended) })
		}()
	}
	c.log.Info("omqs: consuming", "consumer", c.name, "kind", c.kind, "queue", sess.queue, "exchange", c.topo.exchange, "keys", c.topo.keys)

	// The subscription is over when a handler finds the delivery channel
	// closed, or (when every handler is in a callback) when the connection
	// or the channel tells it closed.
	// SetCallback(nil) ends it too, gracefully (paused).
	var connErr, chErr *amqp.Error
	paused := false
wait:
	for {
		select {
		case <-ended:
		case connErr = <-sess.connClose:
		case chErr = <-sess.chClose:
		case <-lctx.Done():
		case <-c.cbSet:
			if paused = c.cb.Load() == nil; !paused {
				continue
			}
		}
		break wait
	}
	if lctx.Err() == nil && !paused {
		// The connection or the channel closed, or the broker cancelled the
		// subscription. The deliveries of the callbacks still running come
		// back to the queue (a closed channel cannot acknowledge them), so
		// their context is cancelled; with auto-ack their delivery exists
		// nowhere else, so they are left to finish. Reconnecting waits for
		// them, so that no more callbacks than the concurrency run at once.
		c.ready.Store(false)
		if !c.noAck {
			sessCancel()
		}
		<-handlersDone
		if sess.acks != nil {
			if connErr != nil || chErr != nil || sess.conn.IsClosed() || sess.ch.IsClosed() {
				sess.acks.drop()
			} else {
				sess.acks.close() // the broker cancelled the subscription; the channel is open
			}
		}
		cause := closeCause(sess, connErr, chErr)
		_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
		return cause
	}

	// Graceful stop (or pause): no new deliveries, finish the callbacks in
	// flight, settle them, then close. With auto-ack the deliveries already
	// received belong to this process, so they are handled too.
	c.ready.Store(false)
	if !c.noAck {
		sess.stopping.Store(true)
	}
	cancelErr := sess.ch.Cancel(sess.tag, false)
	if cancelErr != nil {
		// The channel is going or gone: closing the connection makes sure
		// its deliveries close, so the handlers end.
		c.log.Debug("omqs: cancel subscription", "consumer", c.name, "error", cancelErr.Error())
		_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
	}
	<-handlersDone
	if sess.acks != nil {
		if cancelErr != nil || sess.ch.IsClosed() || sess.conn.IsClosed() {
			sess.acks.drop() // nothing can be sent any more
		} else {
			sess.acks.close()
		}
	}
	_ = sess.conn.CloseDeadline(time.Now().Add(2 * time.Second))
	if paused {
		c.log.Info("omqs: callback removed; stopped consuming until a callback is set", "consumer", c.name, "queue", sess.queue)
		return errNoCallback
	}
	return nil
}

// closeCause says why a subscription ended on its own; connErr and chErr are
// what serve already took from sess.connClose and sess.chClose, if anything.
func closeCause(sess *consumerSession, connErr, chErr *amqp.Error) error {
	if connErr == nil {
		select {
		case connErr = <-sess.connClose:
		default:
		}
	}
	if connErr != nil {
		return fmt.Errorf("%w: connection closed: %w", ErrConnection, connErr)
	}
	if chErr == nil {
		select {
		case chErr = <-sess.chClose:
		default:
		}
	}
	if chErr != nil {
		return fmt.Errorf("%w: channel closed: %w", ErrInvalidChannel, chErr)
	}
	if sess.conn.IsClosed() {
		return fmt.Errorf("%w: connection closed", ErrConnection)
	}
	if sess.ch.IsClosed() {
		return fmt.Errorf("%w: channel closed", ErrInvalidChannel)
	}
	return fmt.Errorf("%w: the broker cancelled the subscription to queue %q (deleted?)", ErrInvalidQueue, sess.queue)
}

// handle is one handler: it takes deliveries until the subscription ends.
// Once the consumer stops, the deliveries still arriving (received before
// the subscription was cancelled) are left unacknowledged: they go back to
// the queue when the channel closes. The delivery channel closes once the
// cancellation is done, or when the channel or connection closes.
func (c *consumer) handle(cbCtx context.Context, sess *consumerSession) {
	for d := range sess.deliveries {
		if sess.stopping.Load() {
			continue
		}
		if cbCtx.Err() != nil && !c.noAck {
			// The session ended (its context is cancelled) while this
			// delivery waited in the buffer: it cannot be acknowledged on
			// this channel any more, and comes again on the next session.
			// Calling the callback now would only run it twice.
			continue
		}
		c.deliver(cbCtx, sess, &d)
	}
}

// deliver runs the callback on d and settles it.
func (c *consumer) deliver(cbCtx context.Context, sess *consumerSession, d *amqp.Delivery) {
	c.st.deliveries.Add(1)
	if len(d.Body) > c.maxBody {
		c.refuseTooBig(sess, d)
		return
	}
	restoreRetried(d)
	if c.dedup != nil && d.MessageId != "" && c.dedup.seen(d.MessageId) {
		c.duplicate(sess, d)
		return
	}
	cbp := c.cb.Load()
	if cbp == nil {
		// SetCallback(nil) while this delivery was on its way: the
		// subscription is being cancelled.
		if c.noAck {
			c.log.Error("omqs: auto-acknowledged delivery arrived after the callback was removed; the message is lost",
				"consumer", c.name, "key", d.RoutingKey, "id", d.MessageId)
			return
		}
		c.st.requeues.Add(1)
		c.requeue(sess, d)
		return
	}
	c.inflight.Add(1)
	pctx, t0 := c.obs.start(cbCtx, d)
	panicked, err := c.call(pctx, *cbp, d)
	c.inflight.Add(-1)
	if err == nil && c.dedup != nil && d.MessageId != "" {
		c.dedup.add(d.MessageId)
	}
	if c.noAck {
		c.obs.end(pctx, d, t0, outcomeOf(panicked, OutcomeAck), err)
		switch {
		case err == nil:
		case cbCtx.Err() != nil && errors.Is(err, cbCtx.Err()):
			// Run's or Stop's context ended: the broker forgot the
			// delivery when it sent it, so it is gone.
			c.lost.Add(1)
			c.log.Error("omqs: callback gave up on an auto-acknowledged delivery as its context ended; the message is lost",
				"consumer", c.name, "key", d.RoutingKey, "id", d.MessageId, "error", err.Error())
		default:
			c.log.Warn("omqs: callback failed on an auto-acknowledged delivery", "consumer", c.name,
				"key", d.RoutingKey, "id", d.MessageId, "error", err.Error())
		}
		return
	}
	switch {
	case err == nil:
		c.obs.end(pctx, d, t0, OutcomeAck, nil)
		c.redeliv.forget(d)
		c.st.acks.Add(1)
		sess.acks.ack(d.DeliveryTag)
	case panicked:
		c.obs.end(pctx, d, t0, OutcomePanic, err)
		c.redeliv.forget(d)
		c.st.rejects.Add(1)
		c.reject(sess, d)
	case cbCtx.Err() != nil && errors.Is(err, cbCtx.Err()):
		// The callback gave up because the consumer is stopping or the
		// subscription ended.
		c.st.requeues.Add(1)
		c.obs.end(pctx, d, t0, OutcomeRequeue, err)
		c.requeue(sess, d)
	case retryOf(err) != nil:
		c.obs.end(pctx, d, t0, c.retry(cbCtx, sess, d, retryOf(err)), err)
	case IsRequeue(err):
		if n, ok := c.redeliv.requeue(d); !ok {
			c.rep.report(errorOf(c.who, fmt.Errorf("message %q (key %q) was requeued %d times, more than MAX_REDELIVERIES (%d); rejected: %w",
				d.MessageId, d.RoutingKey, n, c.redeliv.max, err)))
			c.st.rejects.Add(1)
			c.obs.end(pctx, d, t0, OutcomeReject, err)
			c.reject(sess, d)
			return
		}
		c.st.requeues.Add(1)
		c.obs.end(pctx, d, t0, OutcomeRequeue, err)
		c.requeue(sess, d)
	default:
		c.obs.end(pctx, d, t0, OutcomeReject, err)
		c.redeliv.forget(d)
		c.log.Warn("omqs: callback rejected a delivery", "consumer", c.name,
			"key", d.RoutingKey, "id", d.MessageId, "error", err.Error())
		c.st.rejects.Add(1)
		c.reject(sess, d)
	}
}

// duplicate acknowledges (unless auto-acknowledged) a delivery whose
// message id this consumer handled within its de-duplication window,
// without calling the callback, and counts it.
func (c *consumer) duplicate(sess *consumerSession, d *amqp.Delivery) {
	n := c.st.duplicates.Add(1)
	c.redeliv.forget(d)
	c.log.Debug("omqs: duplicate delivery acknowledged without calling the callback", "consumer", c.name,
		"key", d.RoutingKey, "id", d.MessageId, "redelivered", d.Redelivered, "duplicates", n)
	if !c.noAck {
		c.st.acks.Add(1)
		sess.acks.ack(d.DeliveryTag)
	}
}

// refuseTooBig rejects without requeue (or, auto-acknowledged, drops) a
// delivery whose body is over MAX_BODY_SIZE, without calling the callback,
// and reports it. amqp091-go has read the whole body by now: what this
// bounds is what the consumer keeps and hands on.
func (c *consumer) refuseTooBig(sess *consumerSession, d *amqp.Delivery) {
	n := c.tooBig.Add(1)
	fate := "dropped (auto-acknowledged)"
	if !c.noAck {
		c.redeliv.forget(d)
		c.st.rejects.Add(1)
		c.reject(sess, d)
		fate = "rejected without requeue"
	}
	size := len(d.Body)
	d.Body = nil
	c.rep.report(errorOf(c.who, fmt.Errorf("%w: message %q (key %q) has a body of %d bytes, over MAX_BODY_SIZE (%d); %s, the callback did not see it (%d so far)",
		ErrInvalidMessage, d.MessageId, d.RoutingKey, size, c.maxBody, fate, n)))
}

// requeue sends d back to the queue at once.
func (c *consumer) requeue(sess *consumerSession, d *amqp.Delivery) {
	c.settled(sess.acks.settle(d.DeliveryTag, func() error { return sess.ch.Nack(d.DeliveryTag, false, true) }), d)
}

// reject rejects d without requeue (dead-lettered or dropped) at once.
func (c *consumer) reject(sess *consumerSession, d *amqp.Delivery) {
	c.settled(sess.acks.settle(d.DeliveryTag, func() error { return sess.ch.Reject(d.DeliveryTag, false) }), d)
}

// settled logs a requeue or reject that could not be sent.
func (c *consumer) settled(err error, d *amqp.Delivery) {
	if err != nil {
		c.log.Warn("omqs: could not settle a delivery; the broker will deliver it again", "consumer", c.name,
			"key", d.RoutingKey, "id", d.MessageId, "error", err.Error())
	}
}

// call runs cb, turning a panic into an error.
func (c *consumer) call(ctx context.Context, cb Callback, d *amqp.Delivery) (panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := panicStack()
			pv := transport.Redact(fmt.Sprint(r))
			panicked, err = true, fmt.Errorf("callback panicked: %s", pv)
			c.log.Error("omqs: callback panicked; delivery rejected", "consumer", c.name,
				"key", d.RoutingKey, "id", d.MessageId, "panic", pv, "stack", stack)
			c.rep.passOn(errorOf(c.who, fmt.Errorf("message %q (key %q): %w", d.MessageId, d.RoutingKey, err)))
		}
	}()
	return false, cb(ctx, toDelivery(d))
}

// maxStackFrames bounds the frames of a panic's stack that are logged.
const maxStackFrames = 32

// panicStack returns the stack of the panicking goroutine, called from a
// deferred function that recovered: one "function (file:line)" per frame,
// innermost first, from the frame that panicked. It is logged as a list
// rather than debug.Stack's text, which text handlers print as one line of
// escaped newlines and tabs.
func panicStack() []string {
	pcs := make([]uintptr, 128)
	pcs = pcs[:runtime.Callers(2, pcs)]
	var all []string
	start := 0
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		all = append(all, fmt.Sprintf("%s (%s:%d)", f.Function, f.File, f.Line))
		if strings.HasPrefix(f.Function, "runtime.") && strings.Contains(f.Function, "panic") {
			start = len(all) // the frames so far are the recovery's and the runtime's
		}
		if !more {
			break
		}
	}
	all = all[start:]
	if len(all) > maxStackFrames {
		all = append(all[:maxStackFrames], "…")
	}
	return all
}

// toDelivery converts an amqp091 delivery without copying the body.
func toDelivery(d *amqp.Delivery) Delivery {
	return Delivery{
		Exchange:     d.Exchange,
		RoutingKey:   d.RoutingKey,
		Body:         d.Body,
		ContentType:  d.ContentType,
		MessageID:    d.MessageId,
		AppID:        d.AppId,
		Timestamp:    d.Timestamp,
		Headers:      plainHeaders(d.Headers),
		DeliveryMode: d.DeliveryMode,
		Redelivered:  d.Redelivered,
	}
}

// stop is Stop of a consumer made by its constructor.
func (c *consumer) stop(ctx context.Context) error {
	if ctx.Value(callbackCtxKey{}) == c {
		// Called from a callback: start the shutdown, do not wait for it.
		c.beginStop()
		return nil
	}
	c.stopOnce.Do(func() { c.stopErr = c.doStop(ctx) })
	return c.stopErr
}

// beginStop makes Run stop taking deliveries and return (or keeps it from
// starting); it returns the state the consumer was in.
func (c *consumer) beginStop() (prev consumerState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.quitCancel()
	prev = c.state
	if c.state == consumerNew {
		c.state = consumerDone
	}
	return prev
}

func (c *consumer) doStop(ctx context.Context) error {
	if c.beginStop() == consumerNew {
		// Run never ran and now never will.
		c.closeLog()
		return nil
	}
	// Run runs, or is finishing (it marks the consumer done before it waits
	// for the error handler and closes the log), or returned: wait for it.
	select {
	case <-c.runDone:
		return nil
	case <-ctx.Done():
		select {
		case <-c.runDone:
			return nil
		default:
		}
	}
	// Out of time: give up on the callbacks and close the connection.
	n := c.inflight.Load()
	c.mu.Lock()
	cbCancel, sess := c.cbCancel, c.sess
	c.mu.Unlock()
	cbCancel()
	if sess != nil {
		_ = sess.conn.CloseDeadline(time.Now())
	}
	fate := "their deliveries go back to the queue"
	if c.noAck {
		fate = "their deliveries were auto-acknowledged and are lost if they give up"
	}
	return errorOf(c.who, fmt.Errorf("Stop: %d callback(s) still running when the context ended; connection closed, %s, Run returns once they return: %w",
		n, fate, ctx.Err()))
}

func (c *consumer) closeLog() {
	c.logOnce.Do(func() {
		c.obs.closeObserver()
		if c.ownLog != nil {
			_ = c.ownLog.Close()
		}
	})
}
