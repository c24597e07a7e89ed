// Package otelomqs reports the metrics and traces of OMQS Managers,
// publishers and consumers through OpenTelemetry, as otelhttp does for
// net/http. Give the Observer to every constructor with omqs.WithObserver:
//
//	obs, err := otelomqs.NewObserver(otelomqs.WithMeterProvider(mp), otelomqs.WithTracerProvider(tp))
//	m, err := omqs.NewManager(omqs.WithObserver(obs))
//	c, err := omqs.NewEventMsgConsumer(omqs.WithObserver(obs), omqs.WithCallback(cb))
//
// # Metrics
//
// Counters and gauges are asynchronous instruments: they read the counters
// OMQS keeps anyway when the meter collects, so Send* pays nothing for them.
// Each series carries messaging.system=rabbitmq, messaging.destination.name
// (the exchange), messaging.operation.type and messaging.operation.name
// ("send"/"publish" for Managers and publishers, "process"/"process" for
// consumers), omqs.component (the type) and omqs.name; a Manager's series
// also omqs.lane ("log" or "event"), a consumer's
// messaging.destination.subscription.name (its queue).
//
// Managers and publishers:
//
//	omqs.messages.accepted            counter   taken in by Send* or Publish
//	omqs.messages.refused             counter   refused by Send*: buffer full
//	messaging.client.sent.messages    counter   written to a connection (republishes included)
//	omqs.messages.confirmed           counter   confirmed by the broker
//	omqs.messages.nacked              counter   refused by the broker
//	omqs.messages.returned            counter   returned as unroutable
//	omqs.messages.republished         counter   published again after a reconnect
//	omqs.messages.spooled             counter   written to the spool file
//	omqs.messages.replayed            counter   read back from the spool and confirmed
//	omqs.messages.quarantined         counter   refused by the broker closing the channel; set aside
//	omqs.messages.dropped             counter   lost: no spool to keep them
//	omqs.buffer.depth                 gauge     messages in a Manager lane's buffer
//	omqs.messages.in_flight           gauge     published, not yet confirmed
//	messaging.client.operation.duration histogram (s) publish to confirm; omqs.outcome=ack|nack
//
// Consumers:
//
//	messaging.client.consumed.messages counter  deliveries received
//	omqs.consumer.acks, omqs.consumer.rejects, omqs.consumer.requeues, omqs.consumer.panics counters
//	omqs.consumer.delayed_retries     counter   copied to a retry queue to run later (RetryAfter)
//	omqs.consumer.deduplicated        counter   acknowledged without a callback (WithDedup)
//	omqs.messages.in_flight           gauge     callbacks running
//	messaging.process.duration        histogram (s) callback run time; omqs.outcome=ack|reject|requeue|panic|retry
//
// All: omqs.connection.up (gauge, 1 while connected; a consumer: subscribed),
// omqs.connection.blocked (gauge, 1 while the broker blocks publishing),
// omqs.connection.reconnects (counter) and omqs.connection.blocked.duration
// (counter, seconds).
//
// # Traces
//
// Send*Context, SendEventMessage, SendEventJSON, Publish and
// PublishMessage, called with a context that carries a valid span, start a producer span "publish EXCHANGE" under it and
// put its W3C trace context in the message's headers (traceparent,
// tracestate). A context without a span adds nothing. A consumer extracts
// the trace context and runs its callback under a consumer span
// "process EXCHANGE", a child of the producer's; a message without one (from
// the Python library, say) gets a span of its own and is handled as usual.
package otelomqs

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/omqs-go/omqs"
)

// ScopeName is the instrumentation scope of the meter and the tracer.
const ScopeName = "github.com/omqs-go/omqs/otelomqs"

// Option configures NewObserver.
type Option func(*config)

type config struct {
	mp   metric.MeterProvider
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

// WithMeterProvider sets the meter provider (default: otel.GetMeterProvider()).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets the tracer provider (default: otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithPropagator sets how trace context goes into message headers and
// comes out of them (default: W3C Trace Context).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// Observer is an omqs.Observer that reports through OpenTelemetry. It is
// safe for concurrent use; one Observer serves any number of components.
type Observer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	reg    metric.Registration
	inst   instruments

	mu    sync.Mutex
	comps map[*component]struct{}
}

var _ omqs.Observer = (*Observer)(nil)

// NewObserver creates the instruments and registers their callback with the
// meter provider.
func NewObserver(opts ...Option) (*Observer, error) {
	c := config{prop: propagation.TraceContext{}}
	for _, o := range opts {
		o(&c)
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	o := &Observer{
		tracer: c.tp.Tracer(ScopeName),
		prop:   c.prop,
		comps:  map[*component]struct{}{},
	}
	meter := c.mp.Meter(ScopeName)
	if err := o.inst.create(meter); err != nil {
		return nil, err
	}
	reg, err := meter.RegisterCallback(o.collect, o.inst.observables()...)
	if err != nil {
		return nil, err
	}
	o.reg = reg
	return o, nil
}

// Shutdown unregisters the instruments' callback: the observer reports no
// more counters or gauges.
func (o *Observer) Shutdown() error { return o.reg.Unregister() }

// Observe implements omqs.Observer.
func (o *Observer) Observe(c *omqs.Component) omqs.ComponentObserver {
	comp := newComponent(o, c)
	o.mu.Lock()
	o.comps[comp] = struct{}{}
	o.mu.Unlock()
	return comp
}

// collect observes every component's counters and gauges.
func (o *Observer) collect(_ context.Context, r metric.Observer) error {
	o.mu.Lock()
	comps := make([]*component, 0, len(o.comps))
	for c := range o.comps {
		comps = append(comps, c)
	}
	o.mu.Unlock()
	for _, c := range comps {
		o.inst.observe(r, c)
	}
	return nil
}

// component is the observer of one omqs.Component, with its attributes made
// once.
type component struct {
	o        *Observer
	c        *omqs.Component
	attrs    metric.ObserveOption
	spanName string
	spanOpts []trace.SpanStartOption
	// Record options per outcome, made once: recording allocates nothing.
	settled [2][]metric.RecordOption // nack, ack
	process [5][]metric.RecordOption // by omqs.Outcome
}

func newComponent(o *Observer, c *omqs.Component) *component {
	opType, opName, kind := semconv.MessagingOperationTypeSend, "publish", trace.SpanKindProducer
	if c.Consumer {
		opType, opName, kind = semconv.MessagingOperationTypeProcess, "process", trace.SpanKindConsumer
	}
	kv := []attribute.KeyValue{
		semconv.MessagingSystemRabbitMQ,
		semconv.MessagingDestinationName(c.Exchange),
		opType,
		semconv.MessagingOperationName(opName),
		attribute.String("omqs.component", c.Kind),
		attribute.String("omqs.name", c.Name),
	}
	if c.Lane != "" {
		kv = append(kv, attribute.String("omqs.lane", c.Lane))
	}
	if c.Consumer && c.Queue != "" {
		kv = append(kv, semconv.MessagingDestinationSubscriptionName(c.Queue))
	}
	comp := &component{
		o: o, c: c,
		attrs:    metric.WithAttributeSet(attribute.NewSet(kv...)),
		spanName: opName + " " + c.Exchange,
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(kv...)},
	}
	with := func(outcome string) []metric.RecordOption {
		all := append(append([]attribute.KeyValue(nil), kv...), attribute.String("omqs.outcome", outcome))
		return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(all...))}
	}
	comp.settled[0], comp.settled[1] = with("nack"), with("ack")
	for _, oc := range []omqs.Outcome{omqs.OutcomeAck, omqs.OutcomeReject, omqs.OutcomeRequeue, omqs.OutcomePanic, omqs.OutcomeRetry} {
		comp.process[oc] = with(oc.String())
	}
	return comp
}

// Inject implements omqs.ComponentObserver: under a valid span in ctx it
// starts and ends a producer span and returns its trace context.
func (c *component) Inject(ctx context.Context, key string) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	ctx, span := c.o.tracer.Start(ctx, c.spanName, c.spanOpts...)
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingRabbitMQDestinationRoutingKey(key))
	}
	var h carrier
	c.o.prop.Inject(ctx, &h)
	span.End()
	return h.parent, h.state
}

// Settled implements omqs.ComponentObserver.
func (c *component) Settled(_ string, latency time.Duration, ack bool) {
	i := 0
	if ack {
		i = 1
	}
	c.o.inst.confirm.Record(context.Background(), latency.Seconds(), c.settled[i]...)
}

// StartProcess implements omqs.ComponentObserver.
func (c *component) StartProcess(ctx context.Context, d *omqs.Delivery) context.Context {
	ctx = c.o.prop.Extract(ctx, headerCarrier(d.Headers))
	ctx, span := c.o.tracer.Start(ctx, c.spanName, c.spanOpts...)
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey),
			semconv.MessagingMessageID(d.MessageID),
		)
	}
	return ctx
}

// EndProcess implements omqs.ComponentObserver.
func (c *component) EndProcess(ctx context.Context, _ *omqs.Delivery, took time.Duration, outcome omqs.Outcome, err error) {
	opts := c.process[omqs.OutcomeReject]
	if int(outcome) >= 0 && int(outcome) < len(c.process) {
		opts = c.process[outcome]
	}
	c.o.inst.process.Record(context.Background(), took.Seconds(), opts...)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("omqs.outcome", outcome.String()))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// Close implements omqs.ComponentObserver.
func (c *component) Close() {
	c.o.mu.Lock()
	delete(c.o.comps, c)
	c.o.mu.Unlock()
}

// carrier takes the two W3C headers from a propagator.
type carrier struct{ parent, state string }

func (h *carrier) Get(key string) string {
	switch key {
	case omqs.HeaderTraceparent:
		return h.parent
	case omqs.HeaderTracestate:
		return h.state
	}
	return ""
}

func (h *carrier) Set(key, value string) {
	switch key {
	case omqs.HeaderTraceparent:
		h.parent = value
	case omqs.HeaderTracestate:
		h.state = value
	}
}

func (h *carrier) Keys() []string { return []string{omqs.HeaderTraceparent, omqs.HeaderTracestate} }

// headerCarrier reads trace context from a delivery's headers, where it is
// a string (or bytes, as some clients send it).
type headerCarrier map[string]any

func (h headerCarrier) Get(key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (h headerCarrier) Set(string, string) {}

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
