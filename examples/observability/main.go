// Command observability is a small web service that sends an event through
// OMQS for each request, and a worker that consumes it, both reporting to
// OpenTelemetry: metrics in Prometheus format on /metrics, traces printed
// to stdout, and a readiness probe on /readyz.
//
//	go run ./examples/observability                  # the in-process broker
//	go run ./examples/observability -url amqp://guest:guest@localhost:5672/
//	curl -X POST 'localhost:8080/signup?user=ann'
//	curl localhost:8080/metrics | grep omqs
//	curl localhost:8080/readyz
//
// One request gives one trace on stdout: the handler's span, the producer
// span "publish omqs.exchange.event" under it and, in the worker, the
// consumer span "process omqs.exchange.event" with the callback's span under
// it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/otelomqs"
)

func main() {
	mqurl := flag.String("url", "memory://", "broker URL")
	addr := flag.String("addr", "localhost:8080", "HTTP listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *mqurl, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "observability:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mqurl, addr string) error {
	// OpenTelemetry: a Prometheus exporter for metrics, stdout for traces.
	exporter, err := prometheus.New()
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	spans, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	obs, err := otelomqs.NewObserver(otelomqs.WithMeterProvider(mp), otelomqs.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	defer obs.Shutdown()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	common := []omqs.Option{omqs.WithURL(mqurl), omqs.WithLogger(logger), omqs.WithObserver(obs)}

	// The worker: an EventMsgConsumer whose callback runs inside the
	// consumer span.
	tracer := tp.Tracer("example/worker")
	worker, err := omqs.NewEventMsgConsumer(append(common, omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
		_, span := tracer.Start(ctx, "send welcome mail")
		defer span.End()
		fmt.Fprintf(os.Stderr, "worker: %s\n", d.Body)
		return nil
	}))...)
	if err != nil {
		return err
	}
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(ctx) }()

	// The service: a Manager that the handler sends events through.
	m, err := omqs.NewManager(common...)
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	handlerTracer := tp.Tracer("example/service")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signup", func(w http.ResponseWriter, r *http.Request) {
		ctx, span := handlerTracer.Start(r.Context(), "POST /signup")
		defer span.End()
		if err := m.SendEventContext(ctx, fmt.Sprintf(`{"user":%q}`, r.URL.Query().Get("user")), ""); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.Handle("GET /readyz", omqs.HealthHandler(m, worker))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.ListenAndServe() }()
	fmt.Fprintf(os.Stderr, "listening on %s\n", addr)

	select {
	case <-ctx.Done():
	case err = <-srvErr:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, ignoreClosed(srv.Shutdown(sctx)), m.Stop(sctx), worker.Stop(sctx))
	return errors.Join(err, <-workerDone)
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
