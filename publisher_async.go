package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/dispatch"
	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// AsyncPublisher publishes messages pipelined: Publish returns once the
// message is written to the connection (or held for a reconnect), and the
// broker's confirms are tracked in the background. At most MAX_IN_FLIGHT
// messages wait for a confirm; Publish blocks (until its context ends) while
// that many do. Flush waits until every published message is confirmed.
//
// When the connection or channel drops, the publisher reconnects every
// RECONNECT_INTERVAL and republishes every message the broker had not
// confirmed (so a message can reach the broker twice; its MessageID stays the
// same). After RECONNECT_TIMES failed attempts it writes what it holds, and
// what it is given next, to its spool file (if it has one, see WithSpoolDir)
// and replays the spool once the broker is back.
//
// While the broker blocks the connection (a memory or disk alarm) Publish
// waits; it never writes to a blocked connection.
//
// An AsyncPublisher is safe for concurrent use.
type AsyncPublisher struct {
	e *engine
}

// NewAsyncPublisher builds an AsyncPublisher. Its topology defaults come from
// the [AsyncPublisher] section (or WithSection), overridden by WithExchange,
// WithQueue, WithQueueDurable and WithKeys. Publishes are mandatory unless
// WithMandatory(false). It does not connect: call Start.
func NewAsyncPublisher(opts ...Option) (*AsyncPublisher, error) {
	s, err := buildSettings(forPublisher, "NewAsyncPublisher", opts)
	if err != nil {
		return nil, err
	}
	e, err := newEngineFromSettings(s, "AsyncPublisher", true)
	if err != nil {
		return nil, err
	}
	return &AsyncPublisher{e: e}, nil
}

// Start connects, declares the topology and starts confirm tracking. A bad
// URL, wrong credentials or a refused declaration return at once; an
// unreachable broker is retried every RECONNECT_INTERVAL up to
// RECONNECT_TIMES or until ctx ends.
func (p *AsyncPublisher) Start(ctx context.Context) error { return p.e.start(ctx, false) }

// Publish hands body to the broker under key ("" means the first configured
// key). It returns nil once the message is written or held for a reconnect;
// the confirm arrives later (see Flush and Stats). It blocks while
// MAX_IN_FLIGHT messages are unconfirmed or the broker blocks the connection,
// until ctx ends; it then returns ctx's error and the message was not taken.
func (p *AsyncPublisher) Publish(ctx context.Context, key string, body []byte) error {
	m, err := p.e.newMsg(key, body)
	if err != nil {
		return err
	}
	return p.e.publish(ctx, m)
}

// PublishMessage is Publish with a Message's id, timestamp and headers kept.
func (p *AsyncPublisher) PublishMessage(ctx context.Context, msg Message) error {
	m, err := p.e.fromMessage(msg, false)
	if err != nil {
		return err
	}
	return p.e.publish(ctx, m)
}

// Flush waits until every message published so far is confirmed, spooled or
// failed, or until ctx ends (returning ctx's error).
func (p *AsyncPublisher) Flush(ctx context.Context) error { return p.e.flush(ctx) }

// Stop refuses new publishes, waits for the confirms of what was published,
// and closes the connection. If ctx ends first, the connection is closed at
// once (a Publish stuck writing to a stalled network returns), unconfirmed
// messages are spooled (or reported lost when there is no spool) and the
// error wraps ErrNotConfirmed. Stop is idempotent.
func (p *AsyncPublisher) Stop(ctx context.Context) error { return p.e.stop(ctx) }

// Stats returns the publisher's counters.
func (p *AsyncPublisher) Stats() LaneStats { return p.e.st.snapshot() }

// Pending returns how many messages were handed to Publish and are not yet
// confirmed, spooled or failed.
func (p *AsyncPublisher) Pending() int { return p.e.pending() }

// LaneStats counts what happened to the messages of one path.
type LaneStats struct {
	Accepted    uint64        // taken in by Send* or Publish
	Published   uint64        // written to a connection (republishes included)
	Confirmed   uint64        // acknowledged by the broker
	Nacked      uint64        // refused by the broker (then spooled or failed)
	Returned    uint64        // returned by the broker as unroutable
	Republished uint64        // published again after a reconnect
	Spooled     uint64        // written to the spool file
	Replayed    uint64        // read back from the spool file and published
	Dropped     uint64        // failed with no spool to keep them, or unreadable in it (each reported)
	Reconnects  uint64        // successful reconnections
	Blocked     time.Duration // time the broker kept the connection blocked
}

func (a LaneStats) add(b LaneStats) LaneStats {
	return LaneStats{
		Accepted: a.Accepted + b.Accepted, Published: a.Published + b.Published,
		Confirmed: a.Confirmed + b.Confirmed, Nacked: a.Nacked + b.Nacked,
		Returned: a.Returned + b.Returned, Republished: a.Republished + b.Republished,
		Spooled: a.Spooled + b.Spooled, Replayed: a.Replayed + b.Replayed,
		Dropped: a.Dropped + b.Dropped, Reconnects: a.Reconnects + b.Reconnects,
		Blocked: a.Blocked + b.Blocked,
	}
}

// counters are the live, atomically updated LaneStats.
type counters struct {
	accepted, published, confirmed, nacked, returned, republished,
	spooled, replayed, dropped, reconnects atomic.Uint64
	blockedNanos atomic.Int64
	blockedSince atomic.Int64 // unix nanos, 0 when not blocked
}

func (c *counters) snapshot() LaneStats {
	blocked := time.Duration(c.blockedNanos.Load())
	if since := c.blockedSince.Load(); since != 0 {
		blocked += time.Since(time.Unix(0, since))
	}
	return LaneStats{
		Accepted: c.accepted.Load(), Published: c.published.Load(),
		Confirmed: c.confirmed.Load(), Nacked: c.nacked.Load(),
		Returned: c.returned.Load(), Republished: c.republished.Load(),
		Spooled: c.spooled.Load(), Replayed: c.replayed.Load(),
		Dropped: c.dropped.Load(), Reconnects: c.reconnects.Load(),
		Blocked: blocked,
	}
}

// topology is what a publisher or consumer declares.
type topology struct {
	exchange     string
	kind         string
	durable      bool
	queue        string
	queueDurable bool
	queueType    string
	keys         []string
	queueArgs    amqp.Table
}

// declare declares the exchange, the queue and its bindings on ch.
func (t topology) declare(ch transport.Channel) error {
	if t.exchange != "" {
		if err := ch.ExchangeDeclare(t.exchange, t.kind, t.durable, false, false, false, nil); err != nil {
			return fmt.Errorf("%w: declare exchange %q (%s, durable=%v): %w", ErrInvalidChannel, t.exchange, t.kind, t.durable, err)
		}
	}
	if t.queue == "" {
		return nil
	}
	args := amqp.Table{}
	for k, v := range t.queueArgs {
		args[k] = v
	}
	if t.queueType == "quorum" {
		args["x-queue-type"] = "quorum"
	}
	if len(args) == 0 {
		args = nil
	}
	if _, err := ch.QueueDeclare(t.queue, t.queueDurable, false, false, false, args); err != nil {
		return fmt.Errorf("%w: declare queue %q (durable=%v): %w", ErrInvalidQueue, t.queue, t.queueDurable, err)
	}
	return t.bind(ch, t.queue)
}

// bind binds queue to the exchange with each key (with "" for a fanout or
// headers exchange given no keys). It does nothing without an exchange.
func (t topology) bind(ch transport.Channel, queue string) error {
	if t.exchange == "" {
		return nil
	}
	keys := t.keys
	if len(keys) == 0 && (t.kind == "fanout" || t.kind == "headers") {
		keys = []string{""}
	}
	for _, k := range keys {
		if err := ch.QueueBind(queue, k, t.exchange, false, nil); err != nil {
			return fmt.Errorf("%w: bind queue %q to %q with key %q: %w", ErrInvalidQueue, queue, t.exchange, k, err)
		}
	}
	return nil
}

// publisherTopology picks the section of a publisher and applies overrides.
func publisherTopology(s *settings, defSection string) topology {
	sec := s.section
	if sec == "" {
		sec = defSection
	}
	var pc PublisherConfig
	switch sec {
	case "SyncPublisher":
		pc = s.cfg.SyncPublisher
	case "AsyncBroadcaster":
		pc = s.cfg.AsyncBroadcaster
	case "SyncBroadcaster":
		pc = s.cfg.SyncBroadcaster
	case "AsyncRouter":
		pc = s.cfg.AsyncRouter
	case "SyncRouter":
		pc = s.cfg.SyncRouter
	default:
		pc = s.cfg.AsyncPublisher
	}
	t := topology{
		exchange: pc.Exchange, kind: pc.ExchangeType, durable: pc.ExchangeDurable,
		queue: pc.Queue, queueDurable: pc.QueueDurable, queueType: "classic",
		keys: pc.RoutingKeys,
	}
	s.overrideTopology(&t)
	return t
}

func (s *settings) overrideTopology(t *topology) {
	if s.exchange != nil {
		t.exchange, t.kind, t.durable = *s.exchange, *s.exchangeType, *s.exchangeDurable
	}
	if s.queue != nil {
		t.queue = *s.queue
	}
	if s.queueDurable != nil {
		t.queueDurable = *s.queueDurable
	}
	if s.queueType != nil {
		t.queueType = *s.queueType
	}
	if s.keysSet {
		t.keys = s.keys
	}
}

// engine is the publishing machinery shared by SyncPublisher and
// AsyncPublisher: one connection in confirm mode, a bounded window of
// unconfirmed messages, reconnect with republish, and the spool.
type engine struct {
	kind       string // "SyncPublisher" or "AsyncPublisher", for messages
	name       string
	topo       topology
	defaultKey string
	mandatory  bool
	appID      string
	dialer     *reconnect.Dialer
	log        *slog.Logger
	st         *counters
	sp         *spool.Spool // nil: no spool
	disp       *dispatch.Dispatcher
	ownDisp    bool
	onReturn   func(Returned)
	onError    func(error)
	interval   time.Duration
	laneBusy   *atomic.Bool // a Manager lane's busy flag, or nil

	window int // MAX_IN_FLIGHT: unresolved messages at most

	pubMu sync.Mutex // serializes writes to the channel; never held while waiting
	mu    sync.Mutex // guards what follows
	state engineState
	sess  *session
	// changed is closed (and replaced) whenever state, sess or blocked change.
	changed     chan struct{}
	blocked     bool
	outstanding map[uint64]*outMsg // by delivery tag on sess
	held        []*outMsg          // accepted while disconnected, in order
	inflight    int                // len(outstanding)+len(held)
	idle        chan struct{}      // closed while inflight == 0
	replaying   bool
	replayAgain bool            // spooled while a replay ran: replay again after it
	replayFiles map[string]bool // spool files whose replayed messages are unresolved
	started     bool
	batch       []amqp.Confirmation // serve's confirm batch, reused
	settled     []settled           // confirmAll's scratch, reused
	everUp      bool                // a session was installed before

	stopOnce sync.Once
	stopErr  error
	done     chan struct{} // closed when stopping: ends background goroutines
	runCtx   context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type engineState int

const (
	stateNew      engineState = iota
	stateDown                 // connecting or reconnecting
	stateUp                   // connected
	stateSpooling             // gave up reconnecting; still trying in the background
	stateStopping             // Stop began: no new publishes
	stateStopped
)

// session is one connection with its channel and notification channels.
type session struct {
	conn      transport.Conn
	ch        transport.Channel
	confirms  chan amqp.Confirmation
	returns   chan amqp.Return
	chClose   chan *amqp.Error
	connClose chan *amqp.Error
	blocked   chan amqp.Blocking
}

// outMsg is one message inside the engine.
type outMsg struct {
	exchange string
	key      string
	body     []byte
	id       string
	ts       time.Time
	headers  amqp.Table
	replay   *replayBatch // set when read back from the spool
	done     chan error   // SyncPublisher's waiter (buffered), or nil
	wasOut   bool         // was published once (a resend counts as republished)
}

// replayBatch tracks the messages of one spool file being replayed; the file
// is removed once every message in it is resolved.
type replayBatch struct {
	path      string
	remaining atomic.Int64 // unresolved messages, plus one while the file is read
	failed    atomic.Bool  // a message was neither delivered nor spooled: keep the file
	done      func()       // called once every message is resolved
}

func (b *replayBatch) resolve() {
	if b.remaining.Add(-1) != 0 {
		return
	}
	if !b.failed.Load() {
		os.Remove(b.path)
	}
	b.done()
}

func newEngineFromSettings(s *settings, kind string, mandatory bool) (*engine, error) {
	eps, err := transport.ParseURLs(s.cfg.Global.MQURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	topo := publisherTopology(s, kind)
	if s.mandatory != nil {
		mandatory = *s.mandatory
	}
	name := s.name
	if name == "" {
		name = kind
	}
	var sp *spool.Spool
	if s.spoolDir != "" {
		sp = spool.New(spoolPath(s.spoolDir, topo.exchange+".spool"))
	}
	return configuredEngine(s, kind, name, topo, mandatory, builtinDeps{endpoints: eps, spool: sp}), nil
}

// configuredEngine builds an engine with the settings of s. d holds what a
// Manager shares with its built-in workers; a publisher of its own has only
// endpoints and its spool.
func configuredEngine(s *settings, kind, name string, topo topology, mandatory bool, d builtinDeps) *engine {
	logger := s.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return newEngine(engineConfig{
		kind: kind, name: name, topo: topo, mandatory: mandatory, appID: s.appIDOr(name),
		endpoints: d.endpoints, dialOpts: transport.DialOptions{Name: name, TLS: s.tls},
		interval: s.cfg.Global.ReconnectInterval, times: s.cfg.Global.ReconnectTimes,
		window: s.cfg.Global.MaxInFlight, logger: logger, spool: d.spool, disp: d.disp,
		onReturn: s.onReturn, onError: s.onError, wait: s.reconnectWaitFn, laneBusy: d.busy,
	})
}

func (s *settings) appIDOr(def string) string {
	if s.appID != "" {
		return s.appID
	}
	return def
}

type engineConfig struct {
	kind      string
	name      string
	topo      topology
	mandatory bool
	appID     string
	endpoints []transport.Endpoint
	dialOpts  transport.DialOptions
	interval  time.Duration
	times     int
	window    int
	logger    *slog.Logger
	spool     *spool.Spool
	disp      *dispatch.Dispatcher // nil: own
	onReturn  func(Returned)
	onError   func(error)
	wait      func(ctx context.Context, d time.Duration) error
	laneBusy  *atomic.Bool // cleared when a message from the lane is counted in flight
}

func newEngine(c engineConfig) *engine {
	if c.window < 1 {
		c.window = 1
	}
	e := &engine{
		kind: c.kind, name: c.name, topo: c.topo, mandatory: c.mandatory, appID: c.appID,
		dialer: &reconnect.Dialer{
			Endpoints: c.endpoints, Options: c.dialOpts,
			Interval: c.interval, Times: c.times, Logger: c.logger, Wait: c.wait,
		},
		log: c.logger, st: &counters{}, sp: c.spool, disp: c.disp,
		onReturn: c.onReturn, onError: c.onError, interval: c.interval, laneBusy: c.laneBusy,
		window:      c.window,
		changed:     make(chan struct{}),
		outstanding: make(map[uint64]*outMsg),
		replayFiles: make(map[string]bool),
		batch:       make([]amqp.Confirmation, 0, 256),
		idle:        closedChan(),
		done:        make(chan struct{}),
	}
	if len(c.topo.keys) > 0 {
		e.defaultKey = c.topo.keys[0]
	}
	if e.disp == nil {
		e.disp = dispatch.New(1024)
		e.ownDisp = true
	}
	e.runCtx, e.cancel = context.WithCancel(context.Background())
	return e
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// signal wakes everything waiting on a state change. e.mu must be held.
func (e *engine) signal() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// newMsg validates and builds a message for Publish, copying body.
func (e *engine) newMsg(key string, body []byte) (*outMsg, error) {
	return e.buildMsg(key, body, true, "", time.Time{})
}

// buildMsg validates key and body and builds a message with id and ts, or a
// new id and the current time when they are empty. With copyBody the message
// gets a copy of body; otherwise the engine keeps body.
func (e *engine) buildMsg(key string, body []byte, copyBody bool, id string, ts time.Time) (*outMsg, error) {
	if key == "" {
		key = e.defaultKey
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if len(body) > MaxBodySize {
		return nil, fmt.Errorf("%w: body is %d bytes, larger than the broker's maximum of %d", ErrInvalidMessage, len(body), MaxBodySize)
	}
	if copyBody {
		body = append([]byte(nil), body...)
	}
	if id == "" {
		id = newMessageID()
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	return &outMsg{exchange: e.topo.exchange, key: key, body: body, id: id, ts: ts}, nil
}

// fromMessage builds a message from msg, keeping its id, timestamp and
// headers; with owned, msg.Body is not copied.
func (e *engine) fromMessage(msg Message, owned bool) (*outMsg, error) {
	m, err := e.buildMsg(msg.Key, msg.Body, !owned, msg.MessageID, msg.Timestamp)
	if err != nil {
		return nil, err
	}
	if len(msg.Headers) > 0 {
		h := toTable(msg.Headers)
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("%w: headers: %v", ErrInvalidMessage, err)
		}
		m.headers = h
	}
	return m, nil
}

// start connects (unless background) and starts the background goroutine.
func (e *engine) start(ctx context.Context, background bool) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return fmt.Errorf("%w: %s already started", ErrInvalidPublisher, e.kind)
	}
	if e.state >= stateStopping {
		e.mu.Unlock()
		return fmt.Errorf("%s: %w", e.kind, ErrStopped)
	}
	e.started = true
	e.state = stateDown
	e.signal()
	e.mu.Unlock()

	var sess *session
	if !background {
		// Stop (which cancels runCtx) interrupts the connecting too.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stopWatch := context.AfterFunc(e.runCtx, cancel)
		defer stopWatch()
		s, err := e.connect(cctx, true)
		if err != nil {
			if e.runCtx.Err() != nil {
				err = fmt.Errorf("%s: %w", e.kind, ErrStopped)
			} else {
				err = e.connectError(err)
			}
			// Publishes held while connecting: no goroutine will send them.
			e.pubMu.Lock()
			e.mu.Lock()
			e.state = stateStopped
			held := e.takeAllLocked()
			e.signal()
			e.mu.Unlock()
			e.pubMu.Unlock()
			e.spoolMany(held, err)
			e.cancel()
			if e.ownDisp {
				e.disp.Close()
			}
			return err
		}
		sess = s
		e.install(sess)
	}
	e.mu.Lock()
	if e.state == stateStopped || e.runCtx.Err() != nil {
		// Stop ran meanwhile (it sets stateStopped before waiting for the
		// goroutines, then cancels runCtx) and will not wait for a
		// goroutine started now.
		e.mu.Unlock()
		if sess != nil {
			_ = sess.conn.CloseDeadline(time.Now().Add(time.Second))
		}
		return fmt.Errorf("%s: %w", e.kind, ErrStopped)
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go e.run(sess)
	return nil
}

func (e *engine) connectError(err error) error {
	var ge *reconnect.GiveUpError
	var de *transport.DialError
	if errors.As(err, &ge) || errors.As(err, &de) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", ErrConnection, e.kind, err)
	}
	return fmt.Errorf("%s: %w", e.kind, err)
}

// connect dials and prepares a session.
func (e *engine) connect(ctx context.Context, failFast bool) (*session, error) {
	var sess *session
	_, err := e.dialer.Connect(ctx, func(ctx context.Context, c transport.Conn) error {
		ch, err := c.Channel()
		if err != nil {
			return fmt.Errorf("%w: open channel: %w", ErrInvalidChannel, err)
		}
		if err := e.topo.declare(ch); err != nil {
			if isPreconditionOrAccess(err) {
				return &reconnect.PermanentError{Err: err}
			}
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("%w: confirm mode: %w", ErrInvalidChannel, err)
		}
		n := e.window + 16
		s := &session{
			conn:      c,
			ch:        ch,
			confirms:  ch.NotifyPublish(make(chan amqp.Confirmation, n)),
			returns:   ch.NotifyReturn(make(chan amqp.Return, n)),
			chClose:   ch.NotifyClose(make(chan *amqp.Error, 1)),
			connClose: c.NotifyClose(make(chan *amqp.Error, 1)),
			blocked:   c.NotifyBlocked(make(chan amqp.Blocking, 8)),
		}
		sess = s
		return nil
	}, failFast)
	if err != nil {
		return nil, err
	}
	return sess, nil
}

func isPreconditionOrAccess(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed, amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.NotAllowed, amqp.CommandInvalid:
			return true
		}
	}
	return false
}

// run owns the connection: it reads confirms, returns, blocked notices and
// close notices, and reconnects.
func (e *engine) run(sess *session) {
	defer e.wg.Done()
	for {
		if sess == nil {
			sess = e.reconnectLoop()
			if sess == nil {
				return // stopping
			}
		}
		cause := e.serve(sess)
		e.teardown(sess)
		sess = nil
		select {
		case <-e.done:
			return
		default:
		}
		if e.runCtx.Err() != nil {
			return // aborted: Stop spools what is left
		}
		if cause != nil {
			e.log.Warn("omqs: connection lost, reconnecting", "publisher", e.name, "error", cause.Error())
		}
	}
}

// reconnectLoop connects until it succeeds or the engine stops. After
// RECONNECT_TIMES failures it spools what it holds and keeps trying.
func (e *engine) reconnectLoop() *session {
	for {
		sess, err := e.connect(e.runCtx, false)
		if err == nil {
			e.install(sess)
			return sess
		}
		if e.runCtx.Err() != nil {
			return nil
		}
		// Without failFast, Connect fails only by giving up (after
		// RECONNECT_TIMES attempts, at once when that is 1): spool, and wait
		// an interval before the next round of attempts.
		e.giveUp(err)
		if !e.pause() {
			return nil
		}
	}
}

// pause waits RECONNECT_INTERVAL (at least 10ms, as the Dialer does) and
// reports whether the engine is still running.
func (e *engine) pause() bool {
	if w := e.dialer.Wait; w != nil {
		return w(e.runCtx, e.interval) == nil
	}
	t := time.NewTimer(max(e.interval, 10*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.runCtx.Done():
		return false
	}
}

// install makes sess current and publishes what waited for it.
func (e *engine) install(sess *session) {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	e.mu.Lock()
	if e.state == stateStopped || e.runCtx.Err() != nil {
		e.mu.Unlock()
		_ = sess.conn.CloseDeadline(time.Now())
		return
	}
	resend := e.unresolvedLocked()
	e.sess = sess
	e.blocked = false
	reconnected := e.everUp
	e.everUp = true
	if e.state == stateDown || e.state == stateSpooling {
		e.state = stateUp
	}
	e.signal()
	e.mu.Unlock()
	if reconnected {
		e.st.reconnects.Add(1)
		e.log.Info("omqs: connected", "publisher", e.name, "resending", len(resend))
	}
	for i, m := range resend {
		wasOut := m.wasOut
		if err := e.write(e.runCtx, sess, m); err != nil {
			// Aborted: what is left waits for Stop, which spools it.
			e.mu.Lock()
			e.held = append(e.held, resend[i:]...)
			e.mu.Unlock()
			return
		}
		if wasOut {
			e.st.republished.Add(1)
		}
	}
	e.maybeReplay(0)
}

// write publishes m on sess and records it as outstanding. e.pubMu is held.
//
// When ctx ends before the transport takes m (the in-process broker makes a
// publish wait during an alarm; amqp091 only checks ctx before writing),
// write returns ctx's error and m is neither published nor recorded; the
// caller still counts it in flight. Any other failure means the channel or
// connection is going away: m is held for the next connection and write
// returns nil.
func (e *engine) write(ctx context.Context, sess *session, m *outMsg) error {
	tag := sess.ch.GetNextPublishSeqNo()
	e.mu.Lock()
	e.outstanding[tag] = m
	e.mu.Unlock()
	return e.send(ctx, sess, tag, m)
}

// send publishes m, already recorded as outstanding under tag; see write.
// e.pubMu is held.
func (e *engine) send(ctx context.Context, sess *session, tag uint64, m *outMsg) error {
	pub := amqp.Publishing{
		ContentType:  contentTypeOf(m.body),
		DeliveryMode: amqp.Persistent,
		MessageId:    m.id,
		Timestamp:    m.ts,
		AppId:        e.appID,
		Headers:      m.headers,
		Body:         m.body,
	}
	wasOut := m.wasOut
	m.wasOut = true
	if err := sess.ch.PublishWithContext(ctx, m.exchange, m.key, e.mandatory, false, pub); err != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		mine := e.outstanding[tag] == m
		if mine {
			delete(e.outstanding, tag)
		}
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			m.wasOut = wasOut
			return cerr
		}
		// The channel or connection is going away. amqp091 gives the tag
		// to the next publish, so m moves from outstanding to held and is
		// published on the next connection.
		if mine {
			e.held = append(e.held, m)
		}
		return nil
	}
	e.st.published.Add(1)
	return nil
}

// publish accepts m: it writes it, holds it for the next connection, or
// spools it, depending on the state. It waits while MAX_IN_FLIGHT messages
// are unresolved or the broker blocks the connection, until ctx ends.
func (e *engine) publish(ctx context.Context, m *outMsg) error {
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	switch st {
	case stateNew:
		return fmt.Errorf("%s: %w", e.kind, ErrNotStarted)
	case stateStopping, stateStopped:
		return fmt.Errorf("%s: %w", e.kind, ErrStopped)
	}
	e.pubMu.Lock()
	for {
		// e.sess changes only under e.pubMu, which is held: the tag of the
		// next publish on it can be read before taking e.mu.
		var tag uint64
		if sess := e.sess; sess != nil {
			tag = sess.ch.GetNextPublishSeqNo()
		}
		e.mu.Lock()
		st, blocked, changed, sess := e.state, e.blocked, e.changed, e.sess
		full := e.inflight >= e.window
		switch {
		case st == stateStopped || (st == stateStopping && m.replay != nil):
			e.mu.Unlock()
			e.pubMu.Unlock()
			if m.replay != nil || e.sp == nil {
				return fmt.Errorf("%s: %w", e.kind, ErrStopped)
			}
			// Taken while Stop ran: keep it in the spool.
			e.accept(m)
			e.spoolOne(m, fmt.Errorf("%s: %w", e.kind, ErrStopped))
			return nil
		case st == stateSpooling:
			e.mu.Unlock()
			e.pubMu.Unlock()
			e.accept(m)
			e.spoolOne(m, nil)
			return nil
		case full:
			// Wait for confirms (or the spool) to make room.
		case st == stateDown || sess == nil:
			e.held = append(e.held, m)
			e.addInflight()
			e.counted(m)
			e.mu.Unlock()
			e.pubMu.Unlock()
			e.accept(m)
			return nil
		case !blocked:
			e.addInflight()
			e.counted(m)
			e.outstanding[tag] = m
			e.mu.Unlock()
			err := e.send(ctx, sess, tag, m)
			e.pubMu.Unlock()
			if err != nil {
				// ctx ended before the broker took m: not accepted.
				e.mu.Lock()
				e.doneInflight(1)
				e.mu.Unlock()
				return err
			}
			e.accept(m)
			return nil
		}
		// Full or blocked: wait for a change without holding the locks.
		e.mu.Unlock()
		e.pubMu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		e.pubMu.Lock()
	}
}

// accept counts m as taken in (messages read back from the spool were
// counted when first accepted).
func (e *engine) accept(m *outMsg) {
	if m.replay == nil {
		e.st.accepted.Add(1)
	}
}

// addInflight counts one more unresolved message. e.mu is held.
func (e *engine) addInflight() {
	if e.inflight == 0 {
		e.idle = make(chan struct{})
	}
	e.inflight++
}

// counted tells the Manager's lane that m, which it handed over, is now
// counted in flight here. e.mu is held.
func (e *engine) counted(m *outMsg) {
	if e.laneBusy != nil && m.replay == nil {
		e.laneBusy.Store(false)
	}
}

// doneInflight counts n messages resolved. e.mu is held.
func (e *engine) doneInflight(n int) {
	wasFull := e.inflight >= e.window
	e.inflight -= n
	if e.inflight == 0 {
		close(e.idle)
	}
	if wasFull && e.inflight < e.window {
		e.signal() // room for a waiting publish
	}
}

// serve handles one session's notifications until it closes or the engine
// stops. It returns the close cause (nil when stopping).
func (e *engine) serve(s *session) error {
	for {
		select {
		case c, ok := <-s.confirms:
			if !ok {
				return errors.New("channel closed")
			}
			// Take what else arrived with it and settle them together.
			batch := append(e.batch[:0], c)
		more:
			for len(batch) < cap(e.batch) {
				select {
				case c, ok := <-s.confirms:
					if !ok {
						break more
					}
					batch = append(batch, c)
				default:
					break more
				}
			}
			e.confirmAll(batch)
			e.batch = batch
		case r, ok := <-s.returns:
			if !ok {
				s.returns = nil
				continue
			}
			e.returned(r)
		case b, ok := <-s.blocked:
			if !ok {
				s.blocked = nil
				continue
			}
			e.setBlocked(b)
		case err := <-s.chClose:
			e.drain(s)
			if err == nil {
				return errors.New("channel closed")
			}
			return err
		case err := <-s.connClose:
			e.drain(s)
			if err == nil {
				return errors.New("connection closed")
			}
			return err
		case <-e.done:
			e.drain(s)
			return nil
		}
	}
}

// drain handles confirms and returns already received on a closing session.
func (e *engine) drain(s *session) {
	for {
		select {
		case c, ok := <-s.confirms:
			if !ok {
				s.confirms = nil
				continue
			}
			e.confirm(c)
		case r, ok := <-s.returns:
			if !ok {
				s.returns = nil
				continue
			}
			e.returned(r)
		default:
			return
		}
	}
}

func (e *engine) confirm(c amqp.Confirmation) { e.confirmAll([]amqp.Confirmation{c}) }

// confirmAll settles a batch of confirms under one lock.
func (e *engine) confirmAll(cs []amqp.Confirmation) {
	msgs := e.settled[:0]
	e.mu.Lock()
	for _, c := range cs {
		if m, ok := e.outstanding[c.DeliveryTag]; ok {
			delete(e.outstanding, c.DeliveryTag)
			msgs = append(msgs, settled{m, c.Ack})
		}
	}
	if len(msgs) > 0 {
		e.doneInflight(len(msgs))
	}
	e.mu.Unlock()
	for _, s := range msgs {
		e.settle(s.m, s.ack)
	}
	clear(msgs)
	e.settled = msgs
}

type settled struct {
	m   *outMsg
	ack bool
}

// settle finishes one confirmed (ack) or refused message.
func (e *engine) settle(m *outMsg, ack bool) {
	if ack {
		if m.replay != nil {
			e.st.replayed.Add(1)
			m.replay.resolve()
		} else {
			e.st.confirmed.Add(1)
		}
		if m.done != nil {
			m.done <- nil
		}
		return
	}
	e.st.nacked.Add(1)
	e.log.Warn("omqs: broker nacked a message", "publisher", e.name, "key", m.key, "id", m.id)
	e.spoolOne(m, ErrNacked)
	e.maybeReplay(e.interval)
}

func (e *engine) returned(r amqp.Return) {
	e.st.returned.Add(1)
	ret := Returned{
		Exchange: r.Exchange, Key: r.RoutingKey, MessageID: r.MessageId,
		Body: r.Body, ReplyCode: int(r.ReplyCode), ReplyText: r.ReplyText, ReceivedAt: time.Now(),
	}
	e.log.Warn("omqs: message returned as unroutable", "publisher", e.name,
		"exchange", r.Exchange, "key", r.RoutingKey, "id", r.MessageId, "reply", r.ReplyText)
	if f := e.onReturn; f != nil {
		if !e.disp.Go(func() { f(ret) }) {
			e.log.Warn("omqs: return handler queue full; return not passed on", "id", r.MessageId)
		}
	}
}

func (e *engine) setBlocked(b amqp.Blocking) {
	e.mu.Lock()
	changed := e.blocked != b.Active
	e.blocked = b.Active
	if changed {
		e.signal()
	}
	e.mu.Unlock()
	if !changed {
		return
	}
	if b.Active {
		e.st.blockedSince.Store(time.Now().UnixNano())
		e.log.Warn("omqs: broker blocked the connection; publishing paused", "publisher", e.name, "reason", b.Reason)
	} else {
		e.unblockClock()
		e.log.Info("omqs: broker unblocked the connection", "publisher", e.name)
	}
}

func (e *engine) unblockClock() {
	if since := e.st.blockedSince.Swap(0); since != 0 {
		e.st.blockedNanos.Add(int64(time.Since(time.Unix(0, since))))
	}
}

// teardown forgets sess; its outstanding messages wait for the next one.
func (e *engine) teardown(s *session) {
	e.pubMu.Lock()
	e.mu.Lock()
	if e.sess == s {
		e.sess = nil
	}
	if e.state == stateUp {
		e.state = stateDown
	}
	e.blocked = false
	e.signal()
	e.mu.Unlock()
	e.pubMu.Unlock()
	e.unblockClock()
	_ = s.conn.CloseDeadline(time.Now().Add(time.Second))
}

// giveUp spools everything held after RECONNECT_TIMES failed attempts.
func (e *engine) giveUp(cause error) {
	e.pubMu.Lock()
	e.mu.Lock()
	switch e.state {
	case stateDown:
		e.state = stateSpooling
	case stateStopping:
		// Stop waits for these: spool them now instead of at its deadline.
	default:
		e.mu.Unlock()
		e.pubMu.Unlock()
		return
	}
	msgs := e.takeAllLocked()
	e.signal()
	e.mu.Unlock()
	e.pubMu.Unlock()
	n := len(msgs)
	e.spoolMany(msgs, nil)
	if e.sp != nil {
		e.report(fmt.Errorf("%w: %s %s: %w; %d message(s) written to %s, the rest follow until the broker is back",
			ErrConnection, e.kind, e.name, cause, n, e.sp.Path()))
	} else {
		e.report(fmt.Errorf("%w: %s %s: %w; %d message(s) could not be delivered",
			ErrConnection, e.kind, e.name, cause, n))
	}
}

// takeAllLocked removes every unresolved message, oldest first, and counts
// them resolved. e.mu is held.
func (e *engine) takeAllLocked() []*outMsg {
	msgs := e.unresolvedLocked()
	if len(msgs) > 0 {
		e.doneInflight(len(msgs))
	}
	return msgs
}

// unresolvedLocked removes the outstanding and held messages, oldest first;
// they still count in flight. e.mu is held.
func (e *engine) unresolvedLocked() []*outMsg {
	tags := make([]uint64, 0, len(e.outstanding))
	for t := range e.outstanding {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	msgs := make([]*outMsg, 0, len(tags)+len(e.held))
	for _, t := range tags {
		msgs = append(msgs, e.outstanding[t])
	}
	msgs = append(msgs, e.held...)
	clear(e.outstanding)
	e.held = nil
	return msgs
}

// spoolOne writes one message that cannot be delivered now to the spool.
func (e *engine) spoolOne(m *outMsg, why error) { e.spoolMany([]*outMsg{m}, why) }

// spoolMany writes msgs to the spool, or fails them when there is none. Each
// message's slot is released.
func (e *engine) spoolMany(msgs []*outMsg, why error) {
	if len(msgs) == 0 {
		return
	}
	if e.sp == nil {
		for _, m := range msgs {
			e.resolveFailed(m, why)
		}
		return
	}
	recs := make([]spool.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = spool.NewRecord(m.exchange, m.key, m.id, m.ts, m.body, m.headers)
	}
	if err := e.sp.Append(recs...); err != nil {
		e.report(fmt.Errorf("%s %s: %w", e.kind, e.name, err))
		for _, m := range msgs {
			e.resolveFailed(m, err)
		}
		return
	}
	e.st.spooled.Add(uint64(len(msgs)))
	result := ErrSpooled
	if why != nil {
		result = fmt.Errorf("%w: %w", ErrSpooled, why)
	}
	for _, m := range msgs {
		e.release(m, result)
	}
}

// resolveFailed reports a message that is neither delivered nor spooled.
func (e *engine) resolveFailed(m *outMsg, why error) {
	if why == nil {
		why = ErrConnection
	}
	e.st.dropped.Add(1)
	e.report(fmt.Errorf("%s %s: message %s (key %q) not delivered: %w", e.kind, e.name, m.id, m.key, why))
	if m.replay != nil {
		m.replay.failed.Store(true) // keep its spool file
	}
	e.release(m, why)
}

// release tells m's waiter the result (m no longer counts in flight).
func (e *engine) release(m *outMsg, result error) {
	if m.replay != nil {
		m.replay.resolve()
	}
	if m.done != nil {
		m.done <- result
	}
}

// report passes a background error to the logger and the error handler.
func (e *engine) report(err error) {
	err = redactError(err)
	e.log.Error(err.Error())
	if f := e.onError; f != nil {
		e.disp.Go(func() { f(err) })
	}
}

// maybeReplay starts replaying the spool (after delay) if it holds anything
// and no replay runs.
func (e *engine) maybeReplay(delay time.Duration) {
	if e.sp == nil {
		return
	}
	e.mu.Lock()
	if e.state >= stateStopping {
		e.mu.Unlock()
		return
	}
	if e.replaying {
		e.replayAgain = true // the running replay looks again when it ends
		e.mu.Unlock()
		return
	}
	e.replaying = true
	e.wg.Add(1)
	e.mu.Unlock()
	go e.replay(delay)
}

func (e *engine) replay(delay time.Duration) {
	defer e.wg.Done()
	for {
		e.replayOnce(delay)
		e.mu.Lock()
		again := e.replayAgain && e.state < stateStopping && e.runCtx.Err() == nil
		e.replayAgain = false
		if !again {
			e.replaying = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		delay = e.interval
	}
}

// replayOnce takes the spool files and publishes what they hold.
func (e *engine) replayOnce(delay time.Duration) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-e.runCtx.Done():
			t.Stop()
			return
		}
	}
	files, err := e.sp.Take()
	if err != nil {
		e.report(fmt.Errorf("%s %s: replay: %w", e.kind, e.name, err))
		return
	}
	for _, path := range files {
		e.mu.Lock()
		busy := e.replayFiles[path]
		e.replayFiles[path] = true
		e.mu.Unlock()
		if busy {
			// Replayed before and not all resolved (a reconnect resends
			// them): the file goes once they are.
			continue
		}
		b := &replayBatch{path: path, done: func() {
			e.mu.Lock()
			delete(e.replayFiles, path)
			e.mu.Unlock()
		}}
		b.remaining.Add(1) // held until the file is read
		n := 0
		bad, err := spool.Read(path, func(r spool.Record) error {
			body, err := r.Bytes()
			if err != nil {
				return err
			}
			m := &outMsg{exchange: r.Exchange, key: r.Key, body: body, id: r.MessageID, ts: r.Timestamp, replay: b}
			if len(r.Headers) > 0 {
				m.headers = toTable(r.Headers)
			}
			b.remaining.Add(1)
			if err := e.publish(e.runCtx, m); err != nil {
				b.remaining.Add(-1)
				return err
			}
			n++
			return nil
		})
		if err != nil {
			// The file stays for a later replay.
			b.failed.Store(true)
			b.resolve()
			if !errors.Is(err, ErrStopped) && e.runCtx.Err() == nil {
				e.report(fmt.Errorf("%s %s: replay %s: %w", e.kind, e.name, path, err))
			}
			return
		}
		if bad > 0 {
			e.st.dropped.Add(uint64(bad))
			e.report(fmt.Errorf("%s %s: replay %s: %d line(s) could not be read; their messages are lost", e.kind, e.name, path, bad))
		}
		b.resolve()
		if n > 0 {
			e.log.Info("omqs: replayed spooled messages", "publisher", e.name, "file", path, "messages", n)
		}
	}
}

func (e *engine) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflight
}

func (e *engine) flush(ctx context.Context) error {
	for {
		e.mu.Lock()
		if e.inflight == 0 {
			e.mu.Unlock()
			return nil
		}
		idle := e.idle
		e.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// abort makes the engine stop writing: background work (reconnects,
// resends, the spool's replay) ends, and the current connection is closed at
// once, so that a publish stuck in the transport (a stalled network, a
// blocked in-process broker) returns. What is not confirmed stays in the
// engine for Stop to spool.
func (e *engine) abort() {
	e.cancel()
	e.mu.Lock()
	sess := e.sess
	e.mu.Unlock()
	if sess != nil {
		_ = sess.conn.CloseDeadline(time.Now())
	}
}

// stop ends the engine; see AsyncPublisher.Stop.
func (e *engine) stop(ctx context.Context) error {
	e.stopOnce.Do(func() { e.stopErr = e.doStop(ctx) })
	return e.stopErr
}

func (e *engine) doStop(ctx context.Context) error {
	e.mu.Lock()
	wasStarted := e.started
	e.state = stateStopping
	e.signal()
	e.mu.Unlock()

	var result error
	if wasStarted {
		if err := e.flush(ctx); err != nil {
			// Out of time: keep what is unconfirmed in the spool. A
			// publish that holds the write lock may be stuck in the
			// transport: abort first.
			e.abort()
			e.pubMu.Lock()
			e.mu.Lock()
			msgs := e.takeAllLocked()
			e.mu.Unlock()
			e.pubMu.Unlock()
			if len(msgs) > 0 {
				e.spoolMany(msgs, ErrNotConfirmed)
				where := "they are lost"
				if e.sp != nil {
					where = "they were written to " + e.sp.Path()
				}
				result = fmt.Errorf("%w: %s %s: %d message(s) not confirmed when the context ended (%v); %s",
					ErrNotConfirmed, e.kind, e.name, len(msgs), err, where)
			}
		}
	}
	e.mu.Lock()
	e.state = stateStopped
	sess := e.sess
	e.signal()
	e.mu.Unlock()
	e.cancel()
	close(e.done)
	if sess != nil {
		deadline := time.Now().Add(2 * time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) && d.After(time.Now()) {
			deadline = d
		}
		_ = sess.conn.CloseDeadline(deadline)
	}
	e.wg.Wait()
	// Messages that raced into the engine after the flush.
	e.pubMu.Lock()
	e.mu.Lock()
	late := e.takeAllLocked()
	e.mu.Unlock()
	e.pubMu.Unlock()
	e.spoolMany(late, ErrStopped)
	if e.sp != nil {
		if err := e.sp.Close(); err != nil {
			result = errors.Join(result, fmt.Errorf("%s %s: %w", e.kind, e.name, err))
		}
	}
	if e.ownDisp {
		closeHandlers(e.disp, e.log, e.name)
	}
	e.unblockClock()
	return result
}

// contentTypeOf is text/plain for UTF-8 text and application/octet-stream otherwise.
func contentTypeOf(b []byte) string {
	if isText(b) {
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// toTable converts headers to an amqp091 table, nested maps and slices
// included (amqp091 accepts only its own Table type for nested tables).
func toTable(m map[string]any) amqp.Table {
	t := make(amqp.Table, len(m))
	for k, v := range m {
		t[k] = toTableValue(v)
	}
	return t
}

func toTableValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return toTable(x)
	case amqp.Table:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toTableValue(e)
		}
		return out
	case uint:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	}
	return v
}
