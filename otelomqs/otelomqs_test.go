package otelomqs_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/otelomqs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// telemetry is an SDK meter and tracer that keep everything in memory.
type telemetry struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	obs    *otelomqs.Observer
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{reader: sdkmetric.NewManualReader(), spans: tracetest.NewInMemoryExporter()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tel.spans))
	obs, err := otelomqs.NewObserver(otelomqs.WithMeterProvider(mp), otelomqs.WithTracerProvider(tel.tp))
	if err != nil {
		t.Fatal(err)
	}
	tel.obs = obs
	t.Cleanup(func() {
		_ = obs.Shutdown()
		_ = mp.Shutdown(context.Background())
		_ = tel.tp.Shutdown(context.Background())
	})
	return tel
}

// collect returns the metrics collected now, by name.
func (tel *telemetry) collect(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// value returns the int value of metric name for the series whose
// attributes include want, and whether there is one.
func value(got map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) (int64, bool) {
	var points []metricdata.DataPoint[int64]
	switch d := got[name].(type) {
	case metricdata.Sum[int64]:
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	}
	for _, p := range points {
		if hasAll(p.Attributes, want) {
			return p.Value, true
		}
	}
	return 0, false
}

// histCount returns the count of histogram name for the series whose
// attributes include want.
func histCount(got map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) uint64 {
	d, _ := got[name].(metricdata.Histogram[float64])
	var n uint64
	for _, p := range d.DataPoints {
		if hasAll(p.Attributes, want) {
			n += p.Count
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// backends runs f on the in-process broker and on RabbitMQ.
func backends(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("memory", func(t *testing.T) { f(t, "memory://"+brokertest.Unique("otel")) })
	t.Run("rabbitmq", func(t *testing.T) { f(t, brokertest.URL(t)) })
}

// TestEndToEnd sends one traced and one untraced event through a Manager to
// an EventMsgConsumer and checks the trace handler → publish → process →
// callback, and the metrics of both sides.
func TestEndToEnd(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		tel := newTelemetry(t)
		names := brokertest.Names{Exchange: brokertest.Unique("omqs.test.otel.x"), Queue: brokertest.Unique("omqs.test.otel.q"), Key: brokertest.Unique("k")}
		if strings.HasPrefix(url, "amqp") {
			brokertest.Cleanup(t, []string{names.Exchange + ".log", names.Exchange + ".event"}, []string{names.Queue})
		}
		cfg := omqs.DefaultConfig()
		cfg.Log.Folder = t.TempDir()
		cfg.LogWorker.Exchange = names.Exchange + ".log"
		cfg.EventWorker.Exchange = names.Exchange + ".event"
		cfg.EventWorker.Queue = names.Queue
		cfg.EventWorker.Keys = []string{names.Key}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		type seen struct {
			d      omqs.Delivery
			parent trace.SpanContext
		}
		got := make(chan seen, 4)
		tracer := tel.tp.Tracer("test")
		cb := func(ctx context.Context, d omqs.Delivery) error {
			_, span := tracer.Start(ctx, "callback")
			span.End()
			got <- seen{d, trace.SpanContextFromContext(ctx)}
			return nil
		}
		c, err := omqs.NewEventMsgConsumer(omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet()),
			omqs.WithExchange(cfg.EventWorker.Exchange, "topic", true), omqs.WithQueue(names.Queue), omqs.WithKeys(names.Key),
			omqs.WithCallback(cb), omqs.WithObserver(tel.obs))
		if err != nil {
			t.Fatal(err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- c.Run(ctx) }()
		defer func() {
			if err := c.Stop(ctx); err != nil {
				t.Error(err)
			}
			if err := <-runDone; err != nil {
				t.Error(err)
			}
		}()
		eventually(t, "the consumer to be ready", c.Ready)

		m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet()), omqs.WithObserver(tel.obs))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Stop(ctx)

		hctx, handler := tracer.Start(ctx, "handler")
		if err := m.SendEventContext(hctx, `{"traced":true}`, ""); err != nil {
			t.Fatal(err)
		}
		handler.End()
		if err := m.SendEvent(`{"traced":false}`, ""); err != nil {
			t.Fatal(err)
		}
		var traced, plain seen
		for range 2 {
			select {
			case s := <-got:
				if strings.Contains(string(s.d.Body), "true") {
					traced = s
				} else {
					plain = s
				}
			case <-ctx.Done():
				t.Fatal("deliveries did not arrive")
			}
		}
		if tp, _ := traced.d.Headers[omqs.HeaderTraceparent].(string); !strings.Contains(tp, handler.SpanContext().TraceID().String()) {
			t.Errorf("traced delivery's traceparent %q does not carry the handler's trace %s", tp, handler.SpanContext().TraceID())
		}
		if _, ok := plain.d.Headers[omqs.HeaderTraceparent]; ok {
			t.Errorf("untraced Send added a traceparent: %v", plain.d.Headers)
		}
		if traced.parent.TraceID() != handler.SpanContext().TraceID() {
			t.Errorf("callback ran in trace %s, want the handler's %s", traced.parent.TraceID(), handler.SpanContext().TraceID())
		}
		if plain.parent.TraceID() == handler.SpanContext().TraceID() {
			t.Error("the untraced message's callback joined the handler's trace")
		}

		// The spans of the traced message form one chain.
		exchange := cfg.EventWorker.Exchange
		eventually(t, "the callback spans", func() bool { return count(tel.spans.GetSpans(), "callback") == 2 })
		spans := tel.spans.GetSpans()
		publish := find(t, spans, "publish "+exchange, handler.SpanContext().TraceID())
		process := find(t, spans, "process "+exchange, handler.SpanContext().TraceID())
		callback := find(t, spans, "callback", handler.SpanContext().TraceID())
		if publish.Parent.SpanID() != handler.SpanContext().SpanID() || publish.SpanKind != trace.SpanKindProducer {
			t.Errorf("publish span: parent %s kind %s, want child of the handler %s, producer", publish.Parent.SpanID(), publish.SpanKind, handler.SpanContext().SpanID())
		}
		if process.Parent.SpanID() != publish.SpanContext.SpanID() || !process.Parent.IsRemote() || process.SpanKind != trace.SpanKindConsumer {
			t.Errorf("process span: parent %s (remote %v) kind %s, want remote child of publish %s, consumer", process.Parent.SpanID(), process.Parent.IsRemote(), process.SpanKind, publish.SpanContext.SpanID())
		}
		if callback.Parent.SpanID() != process.SpanContext.SpanID() {
			t.Errorf("callback span's parent %s, want the process span %s", callback.Parent.SpanID(), process.SpanContext.SpanID())
		}
		if !hasAll(attribute.NewSet(process.Attributes...), []attribute.KeyValue{
			attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.destination.name", exchange),
			attribute.String("messaging.rabbitmq.destination.routing_key", names.Key), attribute.String("omqs.outcome", "ack"),
		}) {
			t.Errorf("process span attributes %v", process.Attributes)
		}
		if count(spans, "publish "+exchange) != 1 {
			t.Errorf("%d publish spans, want 1 (only the traced send)", count(spans, "publish "+exchange))
		}

		// Metrics: the event lane confirmed both, the consumer acked both.
		lane := []attribute.KeyValue{attribute.String("omqs.lane", "event"), attribute.String("messaging.destination.name", exchange)}
		cons := []attribute.KeyValue{attribute.String("omqs.component", "EventMsgConsumer"), attribute.String("messaging.operation.type", "process")}
		var mets map[string]metricdata.Aggregation
		eventually(t, "2 confirms and 2 acks", func() bool {
			mets = tel.collect(t)
			n, _ := value(mets, "omqs.messages.confirmed", lane...)
			a, _ := value(mets, "omqs.consumer.acks", cons...)
			return n == 2 && a == 2
		})
		for _, w := range []struct {
			name  string
			attrs []attribute.KeyValue
			want  int64
		}{
			{"omqs.messages.accepted", lane, 2},
			{"messaging.client.sent.messages", lane, 2},
			{"omqs.messages.refused", lane, 0},
			{"omqs.messages.nacked", lane, 0},
			{"omqs.messages.spooled", lane, 0},
			{"omqs.messages.in_flight", lane, 0},
			{"omqs.buffer.depth", lane, 0},
			{"omqs.connection.up", lane, 1},
			{"omqs.connection.reconnects", lane, 0},
			{"messaging.client.consumed.messages", cons, 2},
			{"omqs.consumer.acks", cons, 2},
			{"omqs.consumer.rejects", cons, 0},
			{"omqs.consumer.requeues", cons, 0},
			{"omqs.consumer.panics", cons, 0},
			{"omqs.connection.up", cons, 1},
		} {
			if got, ok := value(mets, w.name, w.attrs...); !ok || got != w.want {
				t.Errorf("%s%v = %d (present %v), want %d", w.name, w.attrs, got, ok, w.want)
			}
		}
		if _, ok := value(mets, "omqs.messages.accepted", attribute.String("messaging.system", "rabbitmq"), attribute.String("omqs.lane", "log")); !ok {
			t.Error("no series for the log lane")
		}
		if n := histCount(mets, "messaging.client.operation.duration", append(lane, attribute.String("omqs.outcome", "ack"))...); n != 2 {
			t.Errorf("publish-to-confirm histogram count %d, want 2", n)
		}
		if n := histCount(mets, "messaging.process.duration", append(cons, attribute.String("omqs.outcome", "ack"))...); n != 2 {
			t.Errorf("callback duration histogram count %d, want 2", n)
		}
	})
}

func count(spans tracetest.SpanStubs, name string) int {
	n := 0
	for _, s := range spans {
		if s.Name == name {
			n++
		}
	}
	return n
}

func find(t *testing.T, spans tracetest.SpanStubs, name string, tid trace.TraceID) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name && s.SpanContext.TraceID() == tid {
			return s
		}
	}
	t.Fatalf("no span %q in trace %s; spans: %v", name, tid, names(spans))
	return tracetest.SpanStub{}
}

func names(spans tracetest.SpanStubs) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return n
}

// TestRetryAndDedupMetrics: a delivery retried later (RetryAfter) and a
// duplicate acknowledged without its callback (WithDedup) are counted.
func TestRetryAndDedupMetrics(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		tel := newTelemetry(t)
		x, q, key := brokertest.Unique("omqs.test.otel.x"), brokertest.Unique("omqs.test.otel.q"), brokertest.Unique("k")
		const delay = 50 * time.Millisecond
		if strings.HasPrefix(url, "amqp") {
			brokertest.Cleanup(t, []string{x}, []string{q, q + ".retry." + delay.String()})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		topo := []omqs.Option{omqs.WithURL(url), omqs.WithLogger(quiet()), omqs.WithExchange(x, "topic", true),
			omqs.WithQueue(q), omqs.WithKeys(key)}

		calls := make(chan omqs.Delivery, 4)
		cb := func(_ context.Context, d omqs.Delivery) error {
			calls <- d
			if d.Headers[omqs.RetriesHeader] == nil {
				return omqs.RetryAfter(errors.New("not yet"), delay)
			}
			return nil
		}
		c, err := omqs.NewSyncConsumer(append(topo, omqs.WithDedup(100, 0), omqs.WithCallback(cb), omqs.WithObserver(tel.obs))...)
		if err != nil {
			t.Fatal(err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- c.Run(ctx) }()
		defer func() {
			if err := c.Stop(ctx); err != nil {
				t.Error(err)
			}
			if err := <-runDone; err != nil {
				t.Error(err)
			}
		}()
		eventually(t, "the consumer to be ready", c.Ready)

		p, err := omqs.NewAsyncPublisher(topo...)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer p.Stop(ctx)
		msg := omqs.Message{Key: key, Body: []byte("job"), MessageID: brokertest.Unique("id")}
		if err := p.PublishMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // the first run, then the retry
			select {
			case <-calls:
			case <-ctx.Done():
				t.Fatalf("callback %d did not run", i+1)
			}
		}
		eventually(t, "the retry acknowledged", func() bool { return c.Stats().Acks == 2 })
		// The same message again: handled already, so acknowledged unseen.
		if err := p.PublishMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
		cons := []attribute.KeyValue{attribute.String("omqs.component", "SyncConsumer")}
		var mets map[string]metricdata.Aggregation
		eventually(t, "the duplicate counted", func() bool {
			mets = tel.collect(t)
			n, _ := value(mets, "omqs.consumer.deduplicated", cons...)
			return n == 1
		})
		if n, ok := value(mets, "omqs.consumer.delayed_retries", cons...); !ok || n != 1 {
			t.Errorf("omqs.consumer.delayed_retries = %d (present %v), want 1", n, ok)
		}
		if n := histCount(mets, "messaging.process.duration", append(cons, attribute.String("omqs.outcome", "retry"))...); n != 1 {
			t.Errorf("callback duration histogram count with outcome retry %d, want 1", n)
		}
		if len(calls) != 0 {
			t.Errorf("the callback ran for the duplicate: %+v", <-calls)
		}
		if st := c.Stats(); st.Retries != 1 || st.Duplicates != 1 || st.Acks != 3 {
			t.Errorf("Stats() = %+v, want 1 retry, 1 duplicate, 3 acks", st)
		}
	})
}

// SendEventMessage and SendEventJSON with a span start a publish span under
// it and carry its trace context beside the caller's headers, and count in
// the event lane's accepted messages.
func TestSendEventMessageTraced(t *testing.T) {
	tel := newTelemetry(t)
	url := "memory://" + brokertest.Unique("otel")
	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet()), omqs.WithObserver(tel.obs))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan omqs.Delivery, 2)
	c, err := omqs.NewEventMsgConsumer(omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet()),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error { got <- d; return nil }))
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	defer func() {
		if err := c.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := <-runDone; err != nil {
			t.Error(err)
		}
	}()

	hctx, handler := tel.tp.Tracer("test").Start(ctx, "handler")
	if _, err := m.SendEventMessage(hctx, omqs.Message{Body: []byte("bytes"), Headers: map[string]any{"tenant": "acme"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SendEventJSON(hctx, "", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	handler.End()
	defer m.Stop(ctx)
	for range 2 {
		select {
		case d := <-got:
			if tp, _ := d.Headers[omqs.HeaderTraceparent].(string); !strings.Contains(tp, handler.SpanContext().TraceID().String()) {
				t.Errorf("%s: traceparent %q does not carry the handler's trace %s", d.Body, tp, handler.SpanContext().TraceID())
			}
			if string(d.Body) == "bytes" && d.Headers["tenant"] != "acme" {
				t.Errorf("the caller's header is lost: %v", d.Headers)
			}
		case <-ctx.Done():
			t.Fatal("deliveries did not arrive")
		}
	}
	if n := count(tel.spans.GetSpans(), "publish "+omqs.EventExchange); n != 2 {
		t.Errorf("%d publish spans, want 2", n)
	}
	lane := []attribute.KeyValue{attribute.String("omqs.lane", "event"), attribute.String("messaging.destination.name", omqs.EventExchange)}
	if n, ok := value(tel.collect(t), "omqs.messages.accepted", lane...); !ok || n != 2 {
		t.Errorf("omqs.messages.accepted = %d (present %v), want 2", n, ok)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}
