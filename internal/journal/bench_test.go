//go:build linux

package journal

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// latencies holds the duration of every call.
type latencies []time.Duration

// quantile returns the duration below which q of the samples lie; l is sorted.
func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(int(q*float64(len(l))), len(l)-1)]
}

func (l latencies) report(b *testing.B, j *Journal) {
	slices.Sort(l)
	b.ReportMetric(float64(l.quantile(0.50)), "p50-ns")
	b.ReportMetric(float64(l.quantile(0.99)), "p99-ns")
	b.ReportMetric(float64(l.quantile(0.999)), "p99.9-ns")
	b.ReportMetric(float64(l[len(l)-1]), "max-ns")
	b.ReportMetric(float64(j.Stats().Stalls)/float64(len(l)), "stalls/op")
}

// drain reads and confirms every entry until the journal is sealed, as the
// publishing worker will.
func drain(j *Journal, done chan<- struct{}) {
	defer close(done)
	r := j.Reader()
	for {
		e, ok := r.Next()
		if !ok {
			return
		}
		j.Confirm(e.Next)
	}
}

var benchBody = string(make([]byte, 100))

// BenchmarkAppend measures Append (a 100-byte body, a 4-byte key, a 12-byte
// id) with a reader confirming behind, under each sync policy: the mean,
// and p50/p99/p99.9 from a histogram of every call's duration. The time
// stamps around each call add about 40 ns to the mean (not to the metrics'
// comparison between policies).
func BenchmarkAppend(b *testing.B) {
	for _, s := range []Sync{SyncNone, SyncInterval(10 * time.Millisecond), SyncEvery} {
		b.Run("sync="+s.String(), func(b *testing.B) {
			j, err := Open(b.TempDir(), Options{Sync: s})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go drain(j, done)
			l := make(latencies, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := j.Append("info", benchBody, "omqs-1234567", int64(i), 0); err != nil {
					b.Fatal(err)
				}
				l = append(l, time.Since(t0))
			}
			b.StopTimer()
			l.report(b, j)
			j.Seal()
			<-done
			j.Close()
		})
	}
}

// BenchmarkAppendParallel is BenchmarkAppend for SyncNone with concurrent
// appenders (GOMAXPROCS of them, as b.RunParallel runs).
func BenchmarkAppendParallel(b *testing.B) {
	j, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go drain(j, done)
	var (
		mu  sync.Mutex
		all = make(latencies, 0, b.N)
	)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		l := make(latencies, 0, b.N)
		for pb.Next() {
			t0 := time.Now()
			if _, err := j.Append("info", benchBody, "omqs-1234567", 0, 0); err != nil {
				b.Error(err)
				return
			}
			l = append(l, time.Since(t0))
		}
		mu.Lock()
		all = append(all, l...)
		mu.Unlock()
	})
	b.StopTimer()
	all.report(b, j)
	j.Seal()
	<-done
	j.Close()
}
