// Command omqs-bench measures OMQS against raw amqp091-go on the same broker
// in the same run, alternating the two, and prints a Markdown table with the
// targets:
//
//	go run ./internal/cmd/omqs-bench -url amqp://guest:guest@127.0.0.1:5672/
//
// Measures: the caller's cost of SendEvent (median and 99th percentile,
// allocations), the same while the connection carries no bytes (the broker
// applying flow control), end-to-end confirmed event throughput next to raw
// pipelined confirms, the log path's throughput, consume throughput with
// manual ack next to raw, AsyncConsumer(8) against SyncConsumer with 1 ms
// callbacks, and the in-process broker's publish-to-callback throughput.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/benchkit"
	"github.com/omqs-go/omqs/internal/faultproxy"
)

var (
	url     = flag.String("url", envOr("OMQS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
	n       = flag.Int("n", 20000, "messages per throughput round")
	sends   = flag.Int("sends", 200000, "Send* calls timed for the latency figures")
	rounds  = flag.Int("rounds", 3, "alternating rounds of OMQS and raw amqp091-go")
	slowN   = flag.Int("slow-n", 2000, "messages for the 1 ms callback comparison")
	only    = flag.String("only", "", "run only the measures whose name contains this (e.g. throughput)")
	quiet   = slog.New(slog.DiscardHandler)
	results []row
)

type row struct{ measure, omqs, raw, ratio, target, verdict string }

func main() {
	flag.Parse()
	ctx := context.Background()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"send latency", sendLatency},
		{"send allocations", sendAllocs},
		{"send while stalled", sendStalled},
		{"event throughput", eventThroughput},
		{"log throughput", logThroughput},
		{"consume throughput", consumeThroughput},
		{"async vs sync consumer", asyncVsSync},
		{"in-process broker", memoryThroughput},
		{"idle cost", idle},
		{"property cost", propsCost},
	}
	for _, s := range steps {
		if !strings.Contains(s.name, *only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "measuring %s...\n", s.name)
		if err := s.run(ctx); err != nil {
			log.Fatalf("%s: %v", s.name, err)
		}
	}
	fmt.Printf("| measure | OMQS | raw amqp091-go | ratio | target | result |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", r.measure, r.omqs, r.raw, r.ratio, r.target, r.verdict)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func unique(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "." + hex.EncodeToString(b[:])
}

// topo is a fresh durable exchange and queue for one measurement.
func topo() benchkit.Topology {
	return benchkit.Topology{
		Exchange: unique("omqs.bench.x"), Kind: "topic", Durable: true,
		Queue: unique("omqs.bench.q"), Key: "bench.key",
	}
}

// manager starts a Manager whose event worker publishes to t.
func manager(ctx context.Context, url string, t benchkit.Topology, buffer int) (*omqs.Manager, error) {
	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = spoolDir()
	cfg.LogWorker.Exchange = t.Exchange + ".log"
	cfg.EventWorker.Exchange = t.Exchange
	cfg.EventWorker.Queue = t.Queue
	cfg.EventWorker.Keys = []string{t.Key}
	// The log lane into a durable queue of its own too, so that both lanes
	// are measured with the broker persisting what they send.
	cfg.LogWorker.Queue, cfg.LogWorker.QueueDurable, cfg.LogWorker.Keys = t.Queue+".log", true, []string{"#"}
	cfg.Global.BufferSize = buffer
	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(quiet), omqs.WithName("omqs-bench"))
	if err != nil {
		return nil, err
	}
	return m, m.Start(ctx)
}

func cleanup(t benchkit.Topology) {
	benchkit.Delete(*url, t)
	benchkit.Delete(*url, benchkit.Topology{Exchange: t.Exchange + ".log", Queue: t.Queue + ".log"})
}

// timeSends calls SendEvent count times and returns per-call nanoseconds.
func timeSends(m *omqs.Manager, count int) (lat []int64, refused int, err error) {
	lat = make([]int64, count)
	for i := range lat {
		t0 := time.Now()
		err := m.SendEvent(benchkit.Body, "")
		lat[i] = int64(time.Since(t0))
		if errors.Is(err, omqs.ErrBufferFull) {
			refused++
		} else if err != nil {
			return nil, 0, err
		}
	}
	return lat, refused, nil
}

func sendLatency(ctx context.Context) error {
	t := topo()
	defer cleanup(t)
	m, err := manager(ctx, *url, t, *sends+16)
	if err != nil {
		return err
	}
	lat, _, err := timeSends(m, *sends)
	if err != nil {
		return err
	}
	if err := m.Stop(ctx); err != nil {
		return err
	}
	o50, o99 := benchkit.TimerOverhead(len(lat))
	p50, p99 := benchkit.Net(benchkit.Percentile(lat, 50), o50), benchkit.Net(benchkit.Percentile(lat, 99), o99)
	results = append(results,
		row{fmt.Sprintf("SendEvent p50, workers publishing to RabbitMQ (clock read of %d ns subtracted)", o50), fmt.Sprintf("%d ns", p50), "", "", "≤ 150 ns", verdict(p50 <= 150)},
		row{"SendEvent p99", fmt.Sprintf("%d ns", p99), "", "", "≤ 2 µs", verdict(p99 <= 2000)})
	return nil
}

// holdWorker takes one message and holds it: the caller's allocations are
// then the only ones.
type holdWorker struct{ release chan struct{} }

func (w holdWorker) WorkerWillRun(context.Context) error { return nil }
func (w holdWorker) MsgDidReceive(ctx context.Context, _ omqs.Message) error {
	select {
	case <-w.release:
	case <-ctx.Done():
	}
	return nil
}
func (w holdWorker) WorkerWillStop(context.Context) error { return nil }

func sendAllocs(ctx context.Context) error {
	w := holdWorker{release: make(chan struct{})}
	m, err := omqs.NewManager(omqs.WithURL("memory://omqs-bench-allocs"), omqs.WithLogWorker(w), omqs.WithEventWorker(w),
		omqs.WithBufferSize(1<<16), omqs.WithLogger(quiet), omqs.WithSpoolDir(spoolDir()))
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	allocs := testing.AllocsPerRun(10000, func() { m.SendEvent(benchkit.Body, "") })
	close(w.release)
	if err := m.Stop(ctx); err != nil {
		return err
	}
	results = append(results, row{"SendEvent allocations per call", fmt.Sprintf("%.1f", allocs), "", "", "≤ 1", verdict(allocs <= 1)})
	return nil
}

func sendStalled(ctx context.Context) error {
	u, err := amqp.ParseURI(*url)
	if err != nil {
		return err
	}
	p, err := faultproxy.New(fmt.Sprintf("%s:%d", u.Host, u.Port))
	if err != nil {
		return err
	}
	defer p.Close()
	pu := u
	pu.Host, pu.Port = "127.0.0.1", 0
	fmt.Sscanf(p.Addr()[strings.LastIndexByte(p.Addr(), ':')+1:], "%d", &pu.Port)
	t := topo()
	defer cleanup(t)
	m, err := manager(ctx, pu.String(), t, omqs.DefaultBufferSize)
	if err != nil {
		return err
	}
	p.Stall(true)
	lat, refused, err := timeSends(m, *sends)
	if err != nil {
		return err
	}
	p.Stall(false)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.Stop(sctx); err != nil {
		return err
	}
	o50, o99 := benchkit.TimerOverhead(len(lat))
	p50, p99 := benchkit.Net(benchkit.Percentile(lat, 50), o50), benchkit.Net(benchkit.Percentile(lat, 99), o99)
	results = append(results, row{
		fmt.Sprintf("SendEvent while no byte flows (p50 / p99; %d%% refused with ErrBufferFull)", refused*100/len(lat)),
		fmt.Sprintf("%d / %d ns", p50, p99), "", "", "no stall: p99 ≤ 2 µs", verdict(p99 <= 2000)})
	return nil
}

// alternate runs omqs and raw rounds times, alternating which goes first,
// and returns the median rate of each in messages per second.
func alternate(omqsRun, rawRun func() (time.Duration, error), count int) (o, r float64, err error) {
	m, err := interleave(count, omqsRun, rawRun)
	if err != nil {
		return 0, 0, err
	}
	return m[0], m[1], nil
}

// interleave runs each of runs rounds times, rotating which goes first,
// and returns the median rate of each in messages per second.
func interleave(count int, runs ...func() (time.Duration, error)) ([]float64, error) {
	rates := make([][]float64, len(runs))
	for i := 0; i < *rounds; i++ {
		for j := range runs {
			k := (i + j) % len(runs)
			d, err := runs[k]()
			if err != nil {
				return nil, err
			}
			rates[k] = append(rates[k], float64(count)/d.Seconds())
		}
	}
	medians := make([]float64, len(runs))
	for k := range rates {
		medians[k] = benchkit.Median(rates[k])
	}
	return medians, nil
}

func eventThroughput(ctx context.Context) error {
	t := topo()
	if err := benchkit.Declare(*url, t); err != nil {
		return err
	}
	defer cleanup(t)
	omqsRun := func() (time.Duration, error) {
		defer benchkit.Purge(*url, t)
		m, err := manager(ctx, *url, t, 65536)
		if err != nil {
			return 0, err
		}
		// From the first send to the last confirm, as for raw.
		start := time.Now()
		for i := 0; i < *n; i++ {
			if err := m.SendEventContext(ctx, benchkit.Body, ""); err != nil {
				return 0, err
			}
		}
		for m.Stats().Events.Confirmed < uint64(*n) {
			time.Sleep(200 * time.Microsecond)
		}
		d := time.Since(start)
		return d, m.Stop(ctx)
	}
	raw := func(props benchkit.Props, window int) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			defer benchkit.Purge(*url, t)
			return benchkit.RawPublishProps(*url, t, *n, window, props)
		}
	}
	// The plain client a user writes (persistent bodies, nothing else, 1,000
	// unconfirmed), and the same client sending what an OMQS message
	// carries with OMQS's window.
	rates, err := interleave(*n, omqsRun, raw(benchkit.Plain, benchkit.PlainWindow), raw(benchkit.AsOMQS, omqs.DefaultMaxInFlight))
	if err != nil {
		return err
	}
	o, r, rp := rates[0], rates[1], rates[2]
	eventRate = o
	results = append(results,
		row{"event path, confirmed msgs/s (persistent, durable queue)",
			fmt.Sprintf("%.0f", o), fmt.Sprintf("%.0f", r), fmt.Sprintf("%.2f", o/r), "≥ 1.0× plain raw", verdict(o/r >= 1.0)},
		row{"raw amqp091-go sending what OMQS sends to its own queue (message id, timestamp) with its window, confirmed msgs/s",
			"", fmt.Sprintf("%.0f", rp), fmt.Sprintf("%.2f", rp/r), "", ""})
	return nil
}

// eventRate is the event path's confirmed rate, for the log path's ratio.
var eventRate float64

// logThroughput measures the log lane into a durable queue, as the event
// lane is measured: SendLogContext until Stop returns (every log confirmed).
func logThroughput(ctx context.Context) error {
	var rates []float64
	for range *rounds {
		t := topo()
		m, err := manager(ctx, *url, t, 65536)
		if err != nil {
			cleanup(t)
			return err
		}
		start := time.Now()
		for i := 0; i < *n; i++ {
			if err := m.SendLogContext(ctx, benchkit.Body, "info"); err != nil {
				cleanup(t)
				return err
			}
		}
		if err := m.Stop(ctx); err != nil {
			cleanup(t)
			return err
		}
		rates = append(rates, float64(*n)/time.Since(start).Seconds())
		cleanup(t)
	}
	rate := benchkit.Median(rates)
	ratio, res := "", ""
	if eventRate > 0 {
		ratio, res = fmt.Sprintf("%.2f× events", rate/eventRate), verdict(rate >= 0.9*eventRate)
	}
	results = append(results, row{"log path, confirmed msgs/s (pipelined, durable queue)", fmt.Sprintf("%.0f", rate), "", ratio, "≥ 0.9× event path", res})
	return nil
}

// runner is what every consumer type has.
type runner interface {
	Run(context.Context) error
	Stop(context.Context) error
}

// consume runs an OMQS consumer built by build until count callbacks ran.
func consume(ctx context.Context, build func(...omqs.Option) (runner, error), t benchkit.Topology, count int, work func()) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	c, err := build(omqs.WithURL(*url), omqs.WithLogger(quiet),
		omqs.WithExchange(t.Exchange, "topic", t.Durable), omqs.WithQueue(t.Queue), omqs.WithQueueDurable(t.Durable),
		omqs.WithKeys(t.Key), omqs.WithPrefetch(omqs.DefaultPrefetch),
		omqs.WithCallback(func(context.Context, omqs.Delivery) error {
			if work != nil {
				work()
			}
			if got.Add(1) == int64(count) {
				close(done)
			}
			return nil
		}))
	if err != nil {
		return 0, err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	select {
	case <-done:
	case err := <-runErr:
		return 0, fmt.Errorf("run: %v", err)
	}
	d := time.Since(start)
	if err := c.Stop(ctx); err != nil {
		return 0, err
	}
	return d, <-runErr
}

func syncConsumer(o ...omqs.Option) (runner, error) { return omqs.NewSyncConsumer(o...) }
func asyncConsumer8(o ...omqs.Option) (runner, error) {
	return omqs.NewAsyncConsumer(append(o, omqs.WithConcurrency(8))...)
}

func consumeThroughput(ctx context.Context) error {
	t := topo()
	t.Durable = false
	if err := benchkit.Declare(*url, t); err != nil {
		return err
	}
	defer cleanup(t)
	omqsRun := func() (time.Duration, error) {
		if err := benchkit.Fill(*url, t, *n); err != nil {
			return 0, err
		}
		return consume(ctx, syncConsumer, t, *n, nil)
	}
	rawRun := func() (time.Duration, error) {
		if err := benchkit.Fill(*url, t, *n); err != nil {
			return 0, err
		}
		return benchkit.RawConsume(*url, t.Queue, *n, omqs.DefaultPrefetch)
	}
	o, r, err := alternate(omqsRun, rawRun, *n)
	if err != nil {
		return err
	}
	results = append(results, row{"consume with manual ack, msgs/s (SyncConsumer)",
		fmt.Sprintf("%.0f", o), fmt.Sprintf("%.0f", r), fmt.Sprintf("%.2f", o/r), "≥ 0.95× raw", verdict(o/r >= 0.95)})
	return nil
}

func workMillisecond() {
	t := time.NewTimer(time.Millisecond)
	<-t.C
}

func asyncVsSync(ctx context.Context) error {
	t := topo()
	t.Durable = false
	if err := benchkit.Declare(*url, t); err != nil {
		return err
	}
	defer cleanup(t)
	rate := func(build func(...omqs.Option) (runner, error)) (float64, error) {
		if err := benchkit.Fill(*url, t, *slowN); err != nil {
			return 0, err
		}
		d, err := consume(ctx, build, t, *slowN, workMillisecond)
		return float64(*slowN) / d.Seconds(), err
	}
	s, err := rate(syncConsumer)
	if err != nil {
		return err
	}
	a, err := rate(asyncConsumer8)
	if err != nil {
		return err
	}
	results = append(results, row{"1 ms callbacks, msgs/s: AsyncConsumer(8) vs SyncConsumer",
		fmt.Sprintf("%.0f", a), fmt.Sprintf("%.0f (sync)", s), fmt.Sprintf("%.1f×", a/s), "≥ 6×", verdict(a/s >= 6)})
	return nil
}

func memoryThroughput(ctx context.Context) error {
	mem := "memory://" + unique("omqs-bench")
	t := benchkit.Topology{Exchange: "bench.x", Queue: "bench.q", Key: "bench.key"}
	pub, err := omqs.NewAsyncPublisher(omqs.WithURL(mem), omqs.WithLogger(quiet),
		omqs.WithExchange(t.Exchange, "topic", false), omqs.WithQueue(t.Queue), omqs.WithQueueDurable(false), omqs.WithKeys(t.Key))
	if err != nil {
		return err
	}
	if err := pub.Start(ctx); err != nil {
		return err
	}
	count := *n * 10
	var got atomic.Int64
	done := make(chan struct{})
	c, err := omqs.NewSyncConsumer(omqs.WithURL(mem), omqs.WithLogger(quiet),
		omqs.WithExchange(t.Exchange, "topic", false), omqs.WithQueue(t.Queue), omqs.WithQueueDurable(false), omqs.WithKeys(t.Key),
		omqs.WithCallback(func(context.Context, omqs.Delivery) error {
			if got.Add(1) == int64(count) {
				close(done)
			}
			return nil
		}))
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	body := []byte(benchkit.Body)
	start := time.Now()
	for i := 0; i < count; i++ {
		if err := pub.Publish(ctx, "", body); err != nil {
			return err
		}
	}
	<-done
	d := time.Since(start)
	if err := pub.Stop(ctx); err != nil {
		return err
	}
	if err := c.Stop(ctx); err != nil {
		return err
	}
	if err := <-runErr; err != nil {
		return err
	}
	results = append(results, row{"in-process broker, publish to callback msgs/s", fmt.Sprintf("%.0f", float64(count)/d.Seconds()), "", "", "", ""})
	return nil
}

// spoolDir returns a private folder for the spool files of one measurement
// (OMQS refuses a folder others may write to, such as /tmp itself).
func spoolDir() string {
	dir, err := os.MkdirTemp("", "omqs-bench-")
	if err != nil {
		log.Fatal(err)
	}
	return dir
}
