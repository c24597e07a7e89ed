package omqs

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/benchkit"
	"github.com/omqs-go/omqs/internal/brokertest"
)

// benchManager starts a Manager on the test broker whose buffers hold n messages.
func benchManager(b *testing.B, url string, n int, opts ...Option) (*Manager, *Config, brokertest.Names) {
	b.Helper()
	cfg, names := testConfig(b)
	cfg.Global.BufferSize = n
	m, err := NewManager(append([]Option{WithConfig(cfg), WithURL(url), WithLogger(testLogger(b))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(testCtx(b, 30*time.Second)); err != nil {
		b.Fatal(err)
	}
	return m, cfg, names
}

// reportLatency reports the median and 99th percentile of per-call times,
// less the cost of the clock reads that timed them (reported as timer-ns).
func reportLatency(b *testing.B, lat []int64) {
	if len(lat) == 0 {
		return
	}
	o50, o99 := benchkit.TimerOverhead(100000)
	b.ReportMetric(float64(benchkit.Net(benchkit.Percentile(lat, 50), o50)), "p50-ns")
	b.ReportMetric(float64(benchkit.Net(benchkit.Percentile(lat, 99), o99)), "p99-ns")
	b.ReportMetric(float64(o50), "timer-ns")
}

// benchSend measures the caller's cost of one Send* call; the buffers are
// large enough that no call is refused, and the workers deliver to RabbitMQ
// meanwhile.
func benchSend(b *testing.B, send func(m *Manager) error) {
	url := brokertest.URL(b)
	m, _, _ := benchManager(b, url, b.N+16)
	lat := make([]int64, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		err := send(m)
		lat[i] = int64(time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	if err := m.Stop(testCtx(b, 2*time.Minute)); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSendInfo(b *testing.B) {
	benchSend(b, func(m *Manager) error { return m.SendInfo("user 42 signed in from 10.0.0.1") })
}

func BenchmarkSendEvent(b *testing.B) {
	benchSend(b, func(m *Manager) error { return m.SendEvent(`{"email":"someone@example.com"}`, "") })
}

// benchSendSteady measures the caller's cost of one Send* call as a server
// sees it: the event buffer has its default size (BUFFER_SIZE) and the
// workers deliver to RabbitMQ meanwhile. The broker takes fewer messages a
// second than the loop makes, so the buffer fills: a refused call is not
// counted, and the loop waits (untimed) until the buffer is half empty.
//
// benchSend instead gives the buffer room for all b.N messages. For a call
// that copies its body, the heap then grows by a copy per call, into pages
// the process never touched, and the first touch of each is a page fault
// (about 25 µs on the virtual machines this was measured on) that sets the
// p99 of the calls. A bounded buffer's memory is collected and reused, as
// in a server that runs.
func benchSendSteady(b *testing.B, send func(m *Manager) error) {
	url := brokertest.URL(b)
	size := DefaultConfig().Global.BufferSize
	m, _, _ := benchManager(b, url, size)
	l := m.lanes[eventLane]
	lat := make([]int64, 0, b.N)
	refused := 0
	b.ReportAllocs()
	b.ResetTimer()
	for len(lat) < b.N {
		t0 := time.Now()
		err := send(m)
		d := int64(time.Since(t0))
		if errors.Is(err, ErrBufferFull) {
			refused++
			b.StopTimer()
			deadline := time.Now().Add(time.Minute)
			for l.size() > size/2 {
				if time.Now().After(deadline) {
					b.Fatal("the event buffer did not drain within a minute")
				}
				runtime.Gosched()
			}
			b.StartTimer()
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, d)
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(refused), "waits")
	if err := m.Stop(testCtx(b, 2*time.Minute)); err != nil {
		b.Fatal(err)
	}
}

// benchBody256 is a 256-byte JSON body.
var benchBody256 = []byte(`{"event":"order.created","order":42,"email":"someone@example.com","note":"` + strings.Repeat("x", 256-76) + `"}`)

// BenchmarkSendEventMessage is SendEventMessage of a 256-byte body with a
// content type, without and with headers, and SendEventJSON of a small
// struct, each in a steady state (benchSendSteady) and with a buffer that
// takes every message (benchSend, "growing").
func BenchmarkSendEventMessage(b *testing.B) {
	if len(benchBody256) != 256 {
		b.Fatalf("body of %d bytes", len(benchBody256))
	}
	type order struct {
		ID    int    `json:"id"`
		Email string `json:"email"`
	}
	v := order{42, "someone@example.com"}
	ctx := context.Background()
	body := Message{Body: benchBody256, ContentType: ContentTypeJSON}
	headers := Message{Body: benchBody256, ContentType: ContentTypeJSON, Headers: map[string]any{"tenant": "acme", "attempt": 1}}
	for _, c := range []struct {
		name string
		send func(m *Manager) error
	}{
		{"body", func(m *Manager) error { _, err := m.SendEventMessage(ctx, body); return err }},
		{"body+headers", func(m *Manager) error { _, err := m.SendEventMessage(ctx, headers); return err }},
		{"json", func(m *Manager) error { _, err := m.SendEventJSON(ctx, "", &v); return err }},
	} {
		b.Run(c.name, func(b *testing.B) { benchSendSteady(b, c.send) })
		b.Run(c.name+"/growing", func(b *testing.B) { benchSend(b, c.send) })
	}
}

// BenchmarkSendEventParallel is SendEvent from every P at once.
func BenchmarkSendEventParallel(b *testing.B) {
	url := brokertest.URL(b)
	m, _, _ := benchManager(b, url, b.N+16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := m.SendEvent(`{"email":"someone@example.com"}`, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := m.Stop(testCtx(b, 2*time.Minute)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSendEventStalled measures Send* while the connection to the
// broker carries no bytes at all (as under the broker's flow control or a
// memory alarm): calls must stay as cheap, succeeding until the buffer is
// full and failing fast with ErrBufferFull after.
func BenchmarkSendEventStalled(b *testing.B) {
	url := brokertest.URL(b)
	p := newProxy(b, url)
	m, _, _ := benchManager(b, proxyURL(url, p), 16384)
	p.Stall(true)
	lat := make([]int64, b.N)
	full := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		err := m.SendEvent(`{"email":"someone@example.com"}`, "")
		lat[i] = int64(time.Since(t0))
		if errors.Is(err, ErrBufferFull) {
			full++
		} else if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(full)/float64(b.N), "refused/op")
	p.Stall(false)
	if err := m.Stop(testCtx(b, 2*time.Minute)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEventThroughput is end-to-end confirmed throughput of the event
// path (SendEvent to broker confirm, persistent, mandatory, to a durable
// queue) next to raw amqp091-go with the same window: plain (persistent
// bodies only, as a user writes it) and with OMQS's properties.
func BenchmarkEventThroughput(b *testing.B) {
	url := brokertest.URL(b)
	b.Run("omqs", func(b *testing.B) {
		m, _, names := benchManager(b, url, 65536)
		ctx := testCtx(b, 5*time.Minute)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := m.SendEventContext(ctx, benchkit.Body, ""); err != nil {
				b.Fatal(err)
			}
		}
		if err := m.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		if c := m.Stats().Events.Confirmed; c != uint64(b.N) {
			b.Fatalf("confirmed %d of %d", c, b.N)
		}
		purge(b, names.Queue)
	})
	// The plain client a user writes (persistent bodies, nothing else, 1,000
	// unconfirmed), and the same client sending what an OMQS message
	// carries, with OMQS's window.
	for _, v := range []struct {
		name   string
		props  benchkit.Props
		window int
	}{
		{"raw-amqp091", benchkit.Plain, benchkit.PlainWindow},
		{"raw-amqp091-omqs-props", benchkit.AsOMQS, DefaultMaxInFlight},
		{"raw-amqp091-all-props", benchkit.AllProps, DefaultMaxInFlight},
	} {
		b.Run(v.name, func(b *testing.B) {
			_, names := testConfig(b)
			t := benchkit.Topology{Exchange: names.Exchange + ".event", Kind: "topic", Durable: true, Queue: names.Queue, Key: names.Key}
			if err := benchkit.Declare(url, t); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			d, err := benchkit.RawPublishProps(url, t, b.N, v.window, v.props)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
			purge(b, names.Queue)
		})
	}
}

func purge(b *testing.B, queue string) {
	ch := brokertest.Channel(b)
	if _, err := ch.QueuePurge(queue, false); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLogThroughput is end-to-end confirmed throughput of the log path
// (SendInfo to broker confirm; the log worker publishes one message at a
// time and waits for its confirm).
func BenchmarkLogThroughput(b *testing.B) {
	url := brokertest.URL(b)
	m, _, _ := benchManager(b, url, 65536)
	ctx := testCtx(b, 5*time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.SendLogContext(ctx, "user 42 signed in from 10.0.0.1", "info"); err != nil {
			b.Fatal(err)
		}
	}
	if err := m.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
