package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// engine is the publishing machinery shared by SyncPublisher and
// AsyncPublisher: one connection in confirm mode, a bounded window of
// unconfirmed messages, reconnect with republish, and the spool.
type engine struct {
	kind       string // "SyncPublisher" or "AsyncPublisher", for messages
	name       string
	who        string // kind, and name when it is not kind: errors say "omqs: <who>: ..."
	topo       topology
	defaultKey string
	// mandatory: unroutable messages are returned. Unless mandatoryAll
	// (WithMandatory(true)), a message the publisher's own queue is bound
	// to receive (topology.routesOwn) goes without the flag, which costs
	// the broker a message to the channel for every delivery.
	mandatory    bool
	mandatoryAll bool
	appID        string
	dialer       *reconnect.Dialer
	log          *slog.Logger
	ownLog       *LogManager // the publisher's own LogManager, closed by stop; nil for WithLogger and the Manager's workers
	st           *counters
	sp           *spool.Spool // nil: no spool
	rep          *reporter    // errors and returns go out through it
	ownRep       bool         // rep is the engine's own, closed by Stop
	onReturn     func(Returned)
	interval     time.Duration
	laneBusy     *atomic.Bool      // a Manager lane's busy flag, or nil
	laneFree     func(int)         // gives a Manager lane's message bytes back, or nil
	laneDone     func(uint64)      // resolves a Manager journal's entry (outMsg.jseq), or nil
	obs          ComponentObserver // nil: no WithObserver
	obsClose     func()            // ends obs, for a publisher of its own

	window      int   // MAX_IN_FLIGHT: unresolved messages at most
	windowBytes int64 // MAX_IN_FLIGHT_BYTES: their bodies at most, but one message always goes (0: no bound)

	pubMu sync.Mutex // serializes writes to the channel; never held while waiting
	// lastKey and lastOwn remember topo.routesOwn for the key published
	// last; guarded by pubMu.
	lastKey string
	lastOwn bool
	mu      sync.Mutex // guards what follows
	state   engineState
	sess    *session
	// changed is closed (and replaced) whenever state, sess or blocked change.
	changed     chan struct{}
	blocked     bool
	outstanding map[uint64]*outMsg // by delivery tag on sess
	held        []*outMsg          // accepted while disconnected, in order
	inflight    int                // len(outstanding)+len(held)
	inflightLen int64              // their bodies' bytes
	byteWait    bool               // a publish waits for inflightLen to go down
	idle        chan struct{}      // closed while inflight == 0
	replaying   bool
	draining    bool            // the Manager is stopping: spool at once while no connection is up
	replayAgain bool            // spooled while a replay ran: replay again after it
	replayFiles map[string]bool // spool files whose replayed messages are unresolved
	spoolLeft   map[string]int  // lines of replay files not read back yet, by file
	spoolLeftN  int             // their sum, which Pending counts
	started     bool
	batch       []amqp.Confirmation // serve's confirm batch, reused
	settled     []settled           // confirmAll's scratch, reused
	everUp      bool                // a session was installed before
	// probing: a publish closed the channel and the culprit is among the
	// messages then unconfirmed; they are written one at a time (see
	// advanceProbe). probe is how many at the front of held are still to go.
	probing bool
	probe   int

	backoff reconnect.Backoff // run's: spaces out reconnects after sessions that die young
	quar    *spool.Spool      // the messages the broker refused: FILE.quarantine; nil without a spool

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

// outMsg is one message inside the engine.
type outMsg struct {
	exchange  string
	key       string
	body      []byte
	id        string
	ts        time.Time
	headers   amqp.Table
	ct        string     // the content type, or "": none is sent
	replay    *replayRec // set when read back from the spool
	done      chan error // SyncPublisher's waiter (buffered), or nil
	wasOut    bool       // was published once (a resend counts as republished)
	jseq      uint64     // the Manager journal's entry (Message.jseq), or 0
	spoolRead bool       // a replayed message no longer counted among its file's lines (readSpooled)
	sent      time.Time  // when last written, for the observer's latency (zero without one)
}

// newEngineFromSettings builds the engine of a SyncPublisher or an
// AsyncPublisher (kind) for its constructor. It starts no goroutine.
func newEngineFromSettings(s *settings, kind string, mandatory bool) (*engine, error) {
	ctor := "New" + kind
	eps, err := transport.ParseURLs(s.cfg.Global.MQURL)
	if err != nil {
		return nil, invalidConfig(ctor, "MQURL: %v", err)
	}
	topo, err := publisherTopology(s)
	if err != nil {
		return nil, errorOf(ctor, err)
	}
	if err := checkQueue(ctor, topo); err != nil {
		return nil, err
	}
	if s.mandatory != nil {
		mandatory = *s.mandatory
	}
	name := s.name
	if name == "" {
		name = kind
	}
	ownLog, err := s.ownLogger(ctor, name)
	if err != nil {
		return nil, err
	}
	var sp *spool.Spool
	if s.spoolDir != "" {
		sp = spool.New(spoolPath(s.spoolDir, spoolFileName(topo.exchange)))
	}
	e := configuredEngine(s, kind, name, topo, mandatory, builtinDeps{endpoints: eps, spool: sp})
	e.ownLog = ownLog
	e.observe(s)
	return e, nil
}

// configuredEngine builds an engine with the settings of s, whose logger is
// set (see settings.ownLogger). d holds what a Manager shares with its
// built-in workers; a publisher of its own has only endpoints and its spool.
func configuredEngine(s *settings, kind, name string, topo topology, mandatory bool, d builtinDeps) *engine {
	return newEngine(engineConfig{
		kind: kind, name: name, topo: topo, appID: s.appID,
		mandatory: mandatory, mandatoryAll: mandatory && s.mandatory != nil && *s.mandatory,
		endpoints: d.endpoints, dialOpts: transport.DialOptions{Name: name, TLS: s.tls},
		interval: s.cfg.Global.ReconnectInterval, times: s.cfg.Global.ReconnectTimes,
		window: s.cfg.Global.MaxInFlight, maxBytes: s.cfg.Global.MaxInFlightBytes,
		logger: s.logger, spool: d.spool, rep: d.rep,
		onReturn: s.onReturn, onError: s.onError, laneBusy: d.busy, laneFree: d.free, obs: d.obs,
	})
}

type engineConfig struct {
	kind      string
	name      string
	topo      topology
	mandatory bool
	// mandatoryAll: every publish is mandatory, even one routed by the
	// publisher's own binding (WithMandatory(true)).
	mandatoryAll bool
	appID        string
	endpoints    []transport.Endpoint
	dialOpts     transport.DialOptions
	interval     time.Duration
	times        int
	window       int
	maxBytes     int // MAX_IN_FLIGHT_BYTES
	logger       *slog.Logger
	spool        *spool.Spool
	rep          *reporter // nil: own
	onReturn     func(Returned)
	onError      func(error)
	// wait, when set, replaces the timer between connection attempts
	// (reconnect.Dialer.Wait): the engine's own tests build engines with it
	// to hold a reconnect at a chosen moment. Constructors leave it nil.
	wait     func(ctx context.Context, d time.Duration) error
	laneBusy *atomic.Bool // cleared when a message from the lane is counted in flight
	laneFree func(int)    // called with a lane message's body length once it is resolved
	obs      ComponentObserver
}

func newEngine(c engineConfig) *engine {
	if c.window < 1 {
		c.window = 1
	}
	e := &engine{
		kind: c.kind, name: c.name, topo: c.topo, mandatory: c.mandatory, mandatoryAll: c.mandatoryAll, appID: c.appID,
		dialer: &reconnect.Dialer{
			Endpoints: c.endpoints, Options: c.dialOpts,
			Interval: c.interval, Times: c.times, Logger: componentLogger(c.logger, "publisher", c.name, c.kind), Wait: c.wait,
		},
		log: c.logger, st: &counters{}, sp: c.spool, rep: c.rep,
		onReturn: c.onReturn, interval: c.interval, laneBusy: c.laneBusy, laneFree: c.laneFree, obs: c.obs,
		window:      c.window,
		windowBytes: int64(c.maxBytes),
		changed:     make(chan struct{}),
		outstanding: make(map[uint64]*outMsg),
		replayFiles: make(map[string]bool),
		spoolLeft:   make(map[string]int),
		batch:       make([]amqp.Confirmation, 0, 256),
		idle:        closedChan(),
		done:        make(chan struct{}),
	}
	e.who = c.kind
	if c.name != c.kind {
		e.who = fmt.Sprintf("%s %q", c.kind, c.name)
	}
	if len(c.topo.keys) > 0 {
		e.defaultKey = c.topo.keys[0]
	}
	e.backoff.Interval = c.interval
	if c.spool != nil {
		e.quar = spool.New(c.spool.Path() + ".quarantine")
	}
	if e.rep == nil {
		e.rep = newReporter(c.logger, c.name, c.onError, 1024)
		e.ownRep = true
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

// start connects (unless background) and starts the background goroutine.
func (e *engine) start(ctx context.Context, background bool) error {
	if e.sp != nil {
		if err := e.sp.CheckFolder(); err != nil {
			return fmt.Errorf("%w: %s %s: spool %w", ErrInvalidConfig, e.kind, e.name, err)
		}
		if files, err := e.sp.Pending(); err == nil {
			e.countSpooled(files) // left by an earlier run: Pending counts them
		}
	}
	e.mu.Lock()
	if e.state >= stateStopping {
		// Stopped, or a Start that failed.
		e.mu.Unlock()
		return errorOf(e.who, ErrStopped)
	}
	if e.started {
		e.mu.Unlock()
		return errorOf(e.who, fmt.Errorf("%w: Start was called twice", ErrRunning))
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
				err = errorOf(e.who, ErrStopped)
			} else {
				err = connectError(e.kind, err)
			}
			// Publishes held while connecting: no goroutine will send them.
			e.pubMu.Lock()
			e.mu.Lock()
			e.state = stateStopped
			held := e.takeAllLocked()
			e.signal()
			e.mu.Unlock()
			e.pubMu.Unlock()
			_ = e.spoolMany(held, err) // a failed write is reported and counted as dropped
			e.cancel()
			if e.ownRep {
				e.rep.close()
			}
			e.closeLog()
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
		return errorOf(e.who, ErrStopped)
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go e.run(sess)
	return nil
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
	serr := e.spoolMany(msgs, nil)
	switch {
	case e.sp != nil && serr != nil:
		e.rep.report(errorOf(e.who, fmt.Errorf("%w: %w; %d message(s) could not be written to %s either and are lost: %w",
			ErrConnection, cause, n, e.sp.Path(), serr)))
	case e.sp != nil:
		e.rep.report(errorOf(e.who, fmt.Errorf("%w: %w; %d message(s) written to %s, the rest follow until the broker is back",
			ErrConnection, cause, n, e.sp.Path())))
	default:
		e.rep.report(errorOf(e.who, fmt.Errorf("%w: %w; %d message(s) could not be delivered",
			ErrConnection, cause, n)))
	}
}

// pending counts the messages not confirmed yet: those in flight, and those
// the spool's replay files hold that a replay has not read back yet.
func (e *engine) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflight + e.spoolLeftN
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

// errNoConnection: Stop found no connection up, so it spooled what the
// engine held instead of waiting for a connection and the confirms.
var errNoConnection = errors.New("no connection to the broker")

// flushOrDown waits until every message is resolved (nil), no connection is
// up (errNoConnection) or ctx ends (ctx's error).
func (e *engine) flushOrDown(ctx context.Context) error {
	for {
		e.mu.Lock()
		if e.inflight == 0 {
			e.mu.Unlock()
			return nil
		}
		if e.sess == nil {
			e.mu.Unlock()
			return errNoConnection
		}
		idle, changed := e.idle, e.changed
		e.mu.Unlock()
		select {
		case <-idle:
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopSoon tells the engine that its Manager is stopping and is about to
// hand it the rest of its buffer: while no connection is up, what the engine
// holds and what it is handed from now on goes to the spool at once, in
// order, instead of waiting for a connection until Stop's context ends.
//
// It never waits for e.pubMu: a publish that holds it may be stuck in the
// transport (a stalled network, a blocked broker), and then a connection is
// up anyway. The next publish that finds the engine down spools instead.
func (e *engine) stopSoon() {
	locked := e.pubMu.TryLock()
	e.mu.Lock()
	e.draining = true
	e.signal() // a publish waiting for room looks again
	if !locked || e.state != stateDown {
		e.mu.Unlock()
		if locked {
			e.pubMu.Unlock()
		}
		return
	}
	e.spoolWhileDownLocked(nil)
}

// spoolWhileDownLocked spools what the engine holds, then m unless it is
// nil, and moves it to stateSpooling: later publishes go to the spool too
// until a connection is up again. It is for a draining engine that is
// down. e.pubMu and e.mu are held; it releases them, e.pubMu once the
// spool has the messages, so that a publish that spools next comes after
// them in the file.
func (e *engine) spoolWhileDownLocked(m *outMsg) {
	e.state = stateSpooling
	msgs := e.takeAllLocked()
	e.signal()
	e.mu.Unlock()
	defer e.pubMu.Unlock()
	if m != nil {
		e.accept(m)
		msgs = append(msgs, m)
	}
	_ = e.spoolMany(msgs, nil) // a failed write is reported and counted as dropped
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
		if err := e.flushOrDown(ctx); err != nil {
			// Out of time, or no connection to wait on: keep what is
			// unconfirmed in the spool. A publish that holds the write
			// lock may be stuck in the transport: abort first.
			e.abort()
			e.pubMu.Lock()
			e.mu.Lock()
			msgs := e.takeAllLocked()
			e.mu.Unlock()
			e.pubMu.Unlock()
			if len(msgs) > 0 {
				down := errors.Is(err, errNoConnection)
				why := ErrNotConfirmed
				if down {
					why = ErrConnection
				}
				where := "they are lost"
				if serr := e.spoolMany(msgs, why); serr != nil {
					where = fmt.Sprintf("writing them to %s failed and they are lost (%v)", e.sp.Path(), serr)
				} else if e.sp != nil {
					where = "they were written to " + e.sp.Path()
				}
				if down {
					result = errorOf(e.who, fmt.Errorf("%w: %d message(s) not confirmed, with no connection to the broker when Stop ran (%w); %s",
						ErrNotConfirmed, len(msgs), ErrConnection, where))
				} else {
					result = errorOf(e.who, fmt.Errorf("%w: %d message(s) not confirmed when the context ended (%v); %s",
						ErrNotConfirmed, len(msgs), err, where))
				}
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
	if serr := e.spoolMany(late, ErrStopped); serr != nil {
		result = errors.Join(result, errorOf(e.who, fmt.Errorf("%w: %d message(s) that came in while stopping could not be written to %s and are lost: %w",
			ErrNotConfirmed, len(late), e.sp.Path(), serr)))
	}
	if wasStarted {
		// What a replay had not sent stays in its file, after its mark.
		if err := e.spooledLeftError(); err != nil {
			result = errors.Join(result, err)
		}
	}
	if e.sp != nil {
		if err := e.sp.Close(); err != nil {
			result = errors.Join(result, errorOf(e.who, fmt.Errorf("close spool: %w", err)))
		}
		if err := e.quar.Close(); err != nil {
			result = errors.Join(result, errorOf(e.who, fmt.Errorf("close quarantine: %w", err)))
		}
	}
	if e.ownRep {
		e.rep.close()
	}
	e.unblockClock()
	e.closeLog()
	return result
}

// closeLog closes the publisher's own LogManager (LogManager.Close is
// idempotent); its log lines are dropped after that.
func (e *engine) closeLog() {
	e.closeObserver()
	if e.ownLog != nil {
		_ = e.ownLog.Close()
	}
}
