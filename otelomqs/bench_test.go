package otelomqs_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/benchkit"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/otelomqs"
)

// BenchmarkSend measures the caller's cost of Send* (as the root package's
// BenchmarkSendEvent does) without an observer, with an SDK meter and a
// no-op tracer, and with an SDK tracer under a traced context.
func BenchmarkSend(b *testing.B) {
	type setup struct {
		name     string
		observer bool
		tracer   func() trace.TracerProvider
		ctx      func(tp trace.TracerProvider) context.Context // nil: SendEvent
	}
	noopTP := func() trace.TracerProvider { return noop.NewTracerProvider() }
	for _, s := range []setup{
		{name: "SendEvent/off"},
		{name: "SendEvent/sdkmeter-nooptracer", observer: true, tracer: noopTP},
		{name: "SendEventContext/sdkmeter-nooptracer-nospan", observer: true, tracer: noopTP,
			ctx: func(trace.TracerProvider) context.Context { return context.Background() }},
		{name: "SendEventContext/sdkmeter-sdktracer-span", observer: true,
			tracer: func() trace.TracerProvider {
				return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
			},
			ctx: func(tp trace.TracerProvider) context.Context {
				ctx, span := tp.Tracer("bench").Start(context.Background(), "handler")
				span.End()
				return ctx
			}},
	} {
		b.Run(s.name, func(b *testing.B) {
			url := brokertest.URL(b)
			names := brokertest.NewNames(b)
			cfg := omqs.DefaultConfig()
			cfg.Log.Folder = b.TempDir()
			cfg.LogWorker.Exchange = names.Exchange + ".log"
			cfg.EventWorker.Exchange = names.Exchange + ".event"
			cfg.EventWorker.Queue = names.Queue
			cfg.EventWorker.Keys = []string{names.Key}
			cfg.Global.BufferSize = b.N + 16
			brokertest.Cleanup(b, []string{cfg.LogWorker.Exchange, cfg.EventWorker.Exchange}, nil)
			opts := []omqs.Option{omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet())}
			var tp trace.TracerProvider = noop.NewTracerProvider()
			if s.observer {
				reader := sdkmetric.NewManualReader()
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
				defer mp.Shutdown(context.Background())
				tp = s.tracer()
				obs, err := otelomqs.NewObserver(otelomqs.WithMeterProvider(mp), otelomqs.WithTracerProvider(tp))
				if err != nil {
					b.Fatal(err)
				}
				defer obs.Shutdown()
				opts = append(opts, omqs.WithObserver(obs))
			}
			m, err := omqs.NewManager(opts...)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := m.Start(ctx); err != nil {
				b.Fatal(err)
			}
			send := func() error { return m.SendEvent(`{"email":"someone@example.com"}`, "") }
			if s.ctx != nil {
				sctx := s.ctx(tp)
				send = func() error { return m.SendEventContext(sctx, `{"email":"someone@example.com"}`, "") }
			}
			lat := make([]int64, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				err := send()
				lat[i] = int64(time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			o50, o99 := benchkit.TimerOverhead(100000)
			b.ReportMetric(float64(benchkit.Net(benchkit.Percentile(lat, 50), o50)), "p50-ns")
			b.ReportMetric(float64(benchkit.Net(benchkit.Percentile(lat, 99), o99)), "p99-ns")
			if err := m.Stop(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
