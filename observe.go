package omqs

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Observer is the hook through which metrics and traces leave OMQS, given to
// a constructor with WithObserver. The package otelomqs implements it with
// OpenTelemetry; OMQS itself depends on no telemetry library.
//
// Observe is called once for each Component: each lane of a Manager (when
// NewManager runs), each publisher and each consumer (when its constructor
// runs). It must not block.
type Observer interface {
	Observe(c *Component) ComponentObserver
}

// ComponentObserver observes one Component. Counters and gauges are not
// pushed to it: it reads them with Component.Snapshot when it collects. Its
// other methods are the per-message hooks, none of them on the Send* path
// without a context. They are called from the library's goroutines, may be
// called concurrently and must not block.
type ComponentObserver interface {
	// Inject is called by Send*Context, SendEventMessage, SendEventJSON,
	// Publish and PublishMessage with the caller's context. It returns the W3C trace context to put in the
	// message's headers ("traceparent", "tracestate"), or two empty strings
	// to add nothing. It must not allocate when ctx carries no span.
	Inject(ctx context.Context, key string) (traceparent, tracestate string)
	// Settled is called when the broker confirmed (ack) or refused a
	// message, with the time since it was written to the connection.
	Settled(key string, latency time.Duration, ack bool)
	// StartProcess is called by a consumer before its callback runs, with
	// the callback's context; the callback gets the context it returns (for
	// instance one carrying a span whose parent is the trace context found
	// in d.Headers).
	StartProcess(ctx context.Context, d *Delivery) context.Context
	// EndProcess is called once the delivery's fate is decided, with the
	// context StartProcess returned, the callback's run time, the outcome
	// and the callback's error.
	EndProcess(ctx context.Context, d *Delivery, took time.Duration, outcome Outcome, err error)
	// Close is called once when the Component stops (Manager.Stop, a
	// publisher's Stop, the end of a consumer's Run): the observer stops
	// reading it.
	Close()
}

// Component is one observed part of an application: a lane of a Manager,
// a publisher or a consumer.
type Component struct {
	Kind     string // "Manager", "SyncPublisher", "AsyncPublisher", "SyncConsumer", "AsyncConsumer", "LogMsgConsumer", "EventMsgConsumer"
	Name     string // WithName, or the default name
	Lane     string // "log" or "event" for a Manager's lane, "" otherwise
	Exchange string // the exchange published to or consumed from
	Queue    string // a consumer's queue ("" when the server names it)
	Consumer bool   // a consumer: Snapshot's consumer counts apply
	snapshot func() Snapshot
}

// Snapshot reads the component's counters and gauges now. It is cheap and
// safe to call at any time, also after the component stopped.
func (c *Component) Snapshot() Snapshot {
	if c == nil || c.snapshot == nil {
		return Snapshot{}
	}
	return c.snapshot()
}

// Snapshot is what a Component counts, and its state.
type Snapshot struct {
	// LaneStats are the publishing counters (Managers and publishers).
	LaneStats
	Depth      int  // messages waiting in a Manager lane's buffer
	InFlight   int  // published and not yet confirmed; for a consumer, callbacks running
	Connected  bool // a connection is up (a consumer: subscribed and ready)
	BlockedNow bool // the broker blocks the connection now

	// Consumer counts.
	Deliveries uint64 // deliveries received (refused ones included)
	Acks       uint64 // acknowledged after the callback (or without one)
	Rejects    uint64 // rejected without requeue (panics included)
	Requeues   uint64 // given back to the queue
	Panics     uint64 // callbacks that panicked
	Retries    uint64 // copied to a retry queue to run again later (RetryAfter)
	Duplicates uint64 // acknowledged without a callback: seen within the de-duplication window (WithDedup)
}

// Outcome is what became of a delivery after its callback.
type Outcome int

const (
	OutcomeAck     Outcome = iota // acknowledged (or auto-acknowledged)
	OutcomeReject                 // rejected, dead-lettered where the queue has a DLX
	OutcomeRequeue                // returned to the queue
	OutcomePanic                  // the callback panicked; rejected
	OutcomeRetry                  // copied to a retry queue to run again later (RetryAfter); acknowledged
)

// String returns "ack", "reject", "requeue", "panic" or "retry".
func (o Outcome) String() string {
	switch o {
	case OutcomeAck:
		return "ack"
	case OutcomeReject:
		return "reject"
	case OutcomeRequeue:
		return "requeue"
	case OutcomePanic:
		return "panic"
	case OutcomeRetry:
		return "retry"
	}
	return "unknown"
}

// Trace context header names (W3C Trace Context).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// WithObserver hands the component's metrics and trace hooks to o (see
// Observer; otelomqs.NewObserver builds one for OpenTelemetry). Every
// constructor takes it.
func WithObserver(o Observer) Option {
	return opt("WithObserver", "…", func(s *settings) error {
		s.observer = o
		return nil
	})
}

// observe registers c with s's observer; it returns nil without one.
func (s *settings) observe(c *Component) ComponentObserver {
	if s.observer == nil {
		return nil
	}
	return s.observer.Observe(c)
}

// traceCtx is the trace context Send*Context carries to the worker; nil
// for a message sent without a span.
type traceCtx struct{ parent, state string }

// headers returns the message headers for t.
func (t *traceCtx) headers() map[string]any {
	h := map[string]any{HeaderTraceparent: t.parent}
	if t.state != "" {
		h[HeaderTracestate] = t.state
	}
	return h
}

// inject asks the lane's observer for ctx's trace context.
func (l *lane) inject(ctx context.Context, key string) *traceCtx {
	if l.obs == nil {
		return nil
	}
	tp, ts := l.obs.Inject(ctx, key)
	if tp == "" {
		return nil
	}
	return &traceCtx{tp, ts}
}

// observeLanes registers the Manager's lanes with the observer.
func (m *Manager) observeLanes() {
	for i, l := range m.lanes {
		ex := m.s.cfg.LogWorker.Exchange
		if i == eventLane {
			ex = m.s.cfg.EventWorker.Exchange
		}
		c := &Component{Kind: "Manager", Name: m.name, Lane: l.name, Exchange: ex}
		c.snapshot = func() Snapshot { return m.laneSnapshot(l) }
		l.obs = m.s.observe(c)
	}
}

// unobserveLanes ends the lanes' observation.
func (m *Manager) unobserveLanes() {
	for _, l := range m.lanes {
		if l != nil && l.obs != nil {
			l.obs.Close()
		}
	}
}

func (m *Manager) laneSnapshot(l *lane) Snapshot {
	s := Snapshot{LaneStats: m.laneStats(l), Depth: l.size(), Connected: true}
	if w, ok := l.worker.(laneWorker); ok {
		s.InFlight = w.pendingMsgs()
		if bw, ok := l.worker.(interface{ engineOf() *engine }); ok && bw.engineOf() != nil {
			s.Connected, s.BlockedNow = bw.engineOf().connState()
		}
	}
	return s
}

func (w *builtinWorker) engineOf() *engine { return w.e }

// observe registers a publisher's engine with the observer.
func (e *engine) observe(s *settings) {
	c := &Component{Kind: e.kind, Name: e.name, Exchange: e.topo.exchange, snapshot: e.snapshot}
	if e.obs = s.observe(c); e.obs != nil {
		e.obsClose = sync.OnceFunc(e.obs.Close)
	}
}

func (e *engine) snapshot() Snapshot {
	s := Snapshot{LaneStats: e.st.snapshot(), InFlight: e.pending()}
	s.Connected, s.BlockedNow = e.connState()
	return s
}

// connState reports whether the engine is connected, and blocked.
func (e *engine) connState() (up, blocked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state == stateUp && e.sess != nil, e.blocked
}

// inject adds ctx's trace context to the headers of m, a message given to
// Publish, unless it has some already.
func (e *engine) inject(ctx context.Context, m *outMsg) {
	if e.obs == nil || m.replay != nil {
		return
	}
	if _, ok := m.headers[HeaderTraceparent]; ok {
		return
	}
	tp, ts := e.obs.Inject(ctx, m.key)
	if tp == "" {
		return
	}
	if m.headers == nil {
		m.headers = amqp.Table{}
	}
	m.headers[HeaderTraceparent] = tp
	if ts != "" {
		m.headers[HeaderTracestate] = ts
	}
}

// observeSettle tells the observer the broker settled m.
func (e *engine) observeSettle(m *outMsg, ack bool) {
	if e.obs == nil || m.sent.IsZero() {
		return
	}
	e.obs.Settled(m.key, time.Since(m.sent), ack)
}

// closeObserver ends the observation of a publisher of its own.
func (e *engine) closeObserver() {
	if e.obsClose != nil {
		e.obsClose()
	}
}

// consumerObs counts a consumer's deliveries and calls its observer.
type consumerObs struct {
	o                  ComponentObserver // nil: none
	close              func()
	panics, reconnects atomic.Uint64 // the other counts are the consumer's own (consumerCounters)
}

func (c *consumer) observe(s *settings, kind string) {
	comp := &Component{Kind: kind, Name: c.name, Exchange: c.topo.exchange, Queue: c.topo.queue, Consumer: true}
	comp.snapshot = c.snapshot
	if c.obs.o = s.observe(comp); c.obs.o != nil {
		c.obs.close = sync.OnceFunc(c.obs.o.Close)
	}
}

func (c *consumer) snapshot() Snapshot {
	o := &c.obs
	st := c.Stats()
	return Snapshot{
		LaneStats:  LaneStats{Reconnects: o.reconnects.Load()},
		InFlight:   int(c.inflight.Load()),
		Connected:  c.ready.Load(),
		Deliveries: st.Deliveries, Acks: st.Acks, Rejects: st.Rejects,
		Requeues: st.Requeues, Panics: o.panics.Load(),
		Retries: st.Retries, Duplicates: st.Duplicates,
	}
}

// start begins observing the callback's run on d.
func (o *consumerObs) start(ctx context.Context, d *amqp.Delivery) (context.Context, time.Time) {
	if o.o == nil {
		return ctx, time.Time{}
	}
	dv := toDelivery(d)
	return o.o.StartProcess(ctx, &dv), time.Now()
}

// end counts outcome and tells the observer, after a callback that began
// at t0 (start's time).
func (o *consumerObs) end(ctx context.Context, d *amqp.Delivery, t0 time.Time, outcome Outcome, err error) {
	o.count(outcome)
	if o.o == nil {
		return
	}
	dv := toDelivery(d)
	o.o.EndProcess(ctx, &dv, time.Since(t0), outcome, err)
}

func (o *consumerObs) count(outcome Outcome) {
	if outcome == OutcomePanic {
		o.panics.Add(1)
	}
}

func (o *consumerObs) closeObserver() {
	if o.close != nil {
		o.close()
	}
}

// outcomeOf is OutcomePanic when the callback panicked, else o.
func outcomeOf(panicked bool, o Outcome) Outcome {
	if panicked {
		return OutcomePanic
	}
	return o
}
