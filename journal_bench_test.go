package omqs

import (
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/benchkit"
	"github.com/omqs-go/omqs/internal/brokertest"
)

// journalManager is benchManager with the journal on in a temp dir (64 MiB
// segments, 1 GiB quota: the defaults) with the sync policy sync, or off
// when sync is "off".
func journalManager(b *testing.B, url string, n int, sync string) (*Manager, brokertest.Names) {
	b.Helper()
	if sync == "off" {
		m, _, names := benchManager(b, url, n)
		return m, names
	}
	cfg, names := testConfig(b)
	cfg.Global.BufferSize = n
	cfg.Global.Journal = b.TempDir()
	cfg.Global.JournalSync = sync
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(b)))
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(testCtx(b, 30*time.Second)); err != nil {
		b.Fatal(err)
	}
	return m, names
}

// BenchmarkSendJournal measures the caller's cost of SendEvent with the
// journal on, for each sync policy, next to the in-memory path ("off"), in
// the same run; the workers deliver to RabbitMQ meanwhile.
func BenchmarkSendJournal(b *testing.B) {
	for _, c := range []struct{ name, sync string }{
		{"off", "off"}, {"none", "none"}, {"interval-10ms", "interval:10"}, {"every", "every"},
	} {
		b.Run(c.name, func(b *testing.B) {
			url := brokertest.URL(b)
			m, _ := journalManager(b, url, b.N+16, c.sync)
			lat := make([]int64, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				err := m.SendEvent(`{"email":"someone@example.com"}`, "")
				lat[i] = int64(time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportLatency(b, lat)
			if err := m.Stop(testCtx(b, 5*time.Minute)); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkEventThroughputJournal is end-to-end confirmed throughput of the
// event path (SendEventContext to the last confirm, Stop included) with the
// journal on and off, in the same run.
func BenchmarkEventThroughputJournal(b *testing.B) {
	url := brokertest.URL(b)
	for _, c := range []struct{ name, sync string }{{"memory", "off"}, {"journal", "none"}} {
		b.Run(c.name, func(b *testing.B) {
			m, names := journalManager(b, url, 65536, c.sync)
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
	}
}
