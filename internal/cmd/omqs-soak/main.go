// Command omqs-soak runs a Manager and two consumers against a broker for a
// bounded time and reports, every few seconds, how many messages were sent,
// confirmed and consumed, the throughput, the live heap and the number of
// goroutines. It exits with status 1 when a message is lost, or when the heap
// or the goroutines grew beyond a threshold after the warm-up.
//
// It is a soak test for a person to run (minutes), not part of CI:
//
//	go run ./internal/cmd/omqs-soak -duration 2m -rate 2000
//
// Half of the messages are logs (SendInfo, through the log exchange to a
// LogMsgConsumer), half events (SendEvent, through the event queue to an
// EventMsgConsumer). Exchanges and queues get names unique to the run and
// are deleted at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
)

func main() {
	var o options
	flag.StringVar(&o.url, "url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "how long to send")
	flag.IntVar(&o.rate, "rate", 2000, "messages per second, half logs and half events")
	flag.DurationVar(&o.every, "every", 10*time.Second, "report interval")
	flag.DurationVar(&o.warmup, "warmup", 30*time.Second, "time before the heap and goroutine baseline is taken")
	flag.Float64Var(&o.maxHeapMiB, "max-heap-growth", 16, "MiB the live heap may grow above its baseline")
	flag.IntVar(&o.maxGoroutines, "max-goroutine-growth", 10, "goroutines there may be above the baseline")
	flag.IntVar(&o.size, "size", 100, "bytes per message")
	flag.Parse()
	if o.rate < 2 || o.duration <= 0 || o.every <= 0 || o.size < 32 {
		fmt.Fprintln(os.Stderr, "omqs-soak: -rate must be at least 2, -size at least 32, -duration and -every positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "omqs-soak:", err)
		os.Exit(1)
	}
}

type options struct {
	url           string
	duration      time.Duration
	rate          int
	every         time.Duration
	warmup        time.Duration
	maxHeapMiB    float64
	maxGoroutines int
	size          int
}

// seen records which sequence numbers arrived, in a bitmap sized before the
// run so that it does not grow while the heap is watched.
type seen struct {
	mu    sync.Mutex
	bits  []uint64
	total atomic.Uint64
	dups  atomic.Uint64
	bad   atomic.Uint64
}

func newSeen(n int) *seen { return &seen{bits: make([]uint64, n/64+1)} }

func (s *seen) add(body []byte) {
	seq, ok := parseSeq(body)
	if !ok || seq/64 >= len(s.bits) {
		s.bad.Add(1)
		return
	}
	s.total.Add(1)
	s.mu.Lock()
	w, b := seq/64, uint64(1)<<(seq%64)
	dup := s.bits[w]&b != 0
	s.bits[w] |= b
	s.mu.Unlock()
	if dup {
		s.dups.Add(1)
	}
}

// unique returns how many distinct sequence numbers arrived.
func (s *seen) unique() uint64 { return s.total.Load() - s.dups.Load() }

func body(seq, size int) string {
	b := make([]byte, size)
	copy(b, fmt.Sprintf("seq=%010d ", seq))
	for i := 15; i < size; i++ {
		b[i] = 'x'
	}
	return string(b)
}

func parseSeq(b []byte) (int, bool) {
	if len(b) < 14 || string(b[:4]) != "seq=" {
		return 0, false
	}
	n, err := strconv.Atoi(string(b[4:14]))
	return n, err == nil
}

// usage is a sample of the process's resources.
type usage struct {
	heap       uint64 // live heap after a collection
	inuse      uint64 // heap spans in use
	goroutines int
}

func measure() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{heap: ms.HeapAlloc, inuse: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func run(ctx context.Context, o options) error {
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	id := "omqs.soak." + hex.EncodeToString(suffix[:])
	logEx, evEx := id+".log", id+".event"
	logQ, evQ, evKey := id+".logs", id+".events", id+".key"
	defer cleanup(o.url, []string{logEx, evEx}, []string{logQ, evQ})

	spoolDir, err := os.MkdirTemp("", "omqs-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(spoolDir)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = spoolDir
	cfg.LogWorker.Exchange = logEx
	cfg.EventWorker.Exchange = evEx
	cfg.EventWorker.Queue = evQ
	cfg.EventWorker.Keys = []string{evKey}
	cfg.Global.ReconnectInterval = time.Second
	common := []omqs.Option{omqs.WithConfig(cfg), omqs.WithURL(o.url), omqs.WithLogger(logger)}

	expect := int(o.duration.Seconds()*float64(o.rate)*1.2) + 1000
	logs, events := newSeen(expect), newSeen(expect)
	consume := func(s *seen) omqs.Callback {
		return func(_ context.Context, d omqs.Delivery) error {
			s.add(d.Body)
			return nil
		}
	}
	lc, err := omqs.NewLogMsgConsumer([]string{"#"}, append(common, omqs.WithName("omqs-soak logs"),
		omqs.WithExchange(logEx, "topic", true), omqs.WithQueue(logQ),
		omqs.WithConcurrency(2), omqs.WithPrefetch(256), omqs.WithCallback(consume(logs)))...)
	if err != nil {
		return err
	}
	ec, err := omqs.NewEventMsgConsumer(append(common, omqs.WithName("omqs-soak events"),
		omqs.WithExchange(evEx, "topic", true), omqs.WithQueue(evQ), omqs.WithKeys(evKey),
		omqs.WithConcurrency(4), omqs.WithPrefetch(256), omqs.WithCallback(consume(events)))...)
	if err != nil {
		return err
	}
	type consumer interface {
		Run(context.Context) error
		Stop(context.Context) error
		Ready() bool
	}
	var wg sync.WaitGroup
	runErrs := make(chan error, 2)
	for _, c := range []consumer{lc, ec} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(context.Background()); err != nil {
				runErrs <- err
			}
		}()
	}
	stopConsumers := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = lc.Stop(sctx)
		_ = ec.Stop(sctx)
		wg.Wait()
	}
	defer stopConsumers()
	deadline := time.Now().Add(30 * time.Second)
	for !lc.Ready() || !ec.Ready() {
		if time.Now().After(deadline) {
			return errors.New("the consumers are not ready after 30s")
		}
		select {
		case err := <-runErrs:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}

	m, err := omqs.NewManager(append(common, omqs.WithName("omqs-soak"))...)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = m.Start(sctx)
	cancel()
	if err != nil {
		return err
	}
	managerStopped := false
	defer func() {
		if !managerStopped {
			_ = m.Stop(context.Background())
		}
	}()

	fmt.Printf("omqs-soak: %v at %d msg/s (half logs, half events), %d-byte messages; report every %v, baseline after %v\n",
		o.duration, o.rate, o.size, o.every, o.warmup)
	fmt.Printf("%8s %10s %8s %10s %10s %6s %9s %9s %9s %10s\n",
		"elapsed", "sent", "refused", "confirmed", "consumed", "dups", "msg/s", "heap MiB", "inuse MiB", "goroutines")

	var sent, refused [2]int // logs, events
	start := time.Now()
	report := time.NewTicker(o.every)
	defer report.Stop()
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	var (
		base        *usage
		maxHeap     uint64
		maxG        int
		lastConsume uint64
		lastAt      = start
		seq         [2]int
	)
	consumed := func() uint64 { return logs.unique() + events.unique() }
	confirmed := func() uint64 {
		st := m.Stats()
		return st.Confirmed + st.Replayed
	}
	printRow := func(now time.Time) usage {
		u := measure()
		c := consumed()
		rate := float64(c-lastConsume) / now.Sub(lastAt).Seconds()
		lastConsume, lastAt = c, now
		fmt.Printf("%8s %10d %8d %10d %10d %6d %9.0f %9.1f %9.1f %10d\n",
			now.Sub(start).Round(time.Second), sent[0]+sent[1], refused[0]+refused[1], confirmed(), c,
			logs.dups.Load()+events.dups.Load(), rate, mib(u.heap), mib(u.inuse), u.goroutines)
		return u
	}

	perTick := float64(o.rate) / 100
	owed := 0.0
	interrupted := false
send:
	for time.Since(start) < o.duration {
		select {
		case <-ctx.Done():
			interrupted = true
			break send
		case err := <-runErrs:
			return fmt.Errorf("consumer: %w", err)
		case now := <-report.C:
			u := printRow(now)
			if base == nil && now.Sub(start) >= o.warmup {
				base = &u
				fmt.Printf("%8s baseline: heap %.1f MiB, %d goroutines\n", "", mib(u.heap), u.goroutines)
			} else if base != nil {
				maxHeap, maxG = max(maxHeap, u.heap), max(maxG, u.goroutines)
			}
		case <-pace.C:
			owed += perTick
			for ; owed >= 1; owed-- {
				// Alternate lanes by call; a refused message is sent
				// again on its lane's next turn.
				lane := (sent[0] + sent[1]) % 2
				if seq[lane] >= expect {
					continue
				}
				b := body(seq[lane], o.size)
				var err error
				if lane == 0 {
					err = m.SendInfo(b)
				} else {
					err = m.SendEvent(b, "")
				}
				sent[lane]++
				switch {
				case err == nil:
					seq[lane]++
				case errors.Is(err, omqs.ErrBufferFull):
					refused[lane]++
				default:
					return fmt.Errorf("send: %w", err)
				}
			}
		}
	}

	// Drain: Stop waits for the confirms, then everything must arrive.
	stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = m.Stop(stopCtx)
	cancel()
	managerStopped = true
	if err != nil {
		return fmt.Errorf("Manager.Stop: %w", err)
	}
	accepted := uint64(seq[0] + seq[1])
	wait := time.Now().Add(time.Minute)
	for consumed() < accepted && time.Now().Before(wait) {
		time.Sleep(10 * time.Millisecond)
	}
	printRow(time.Now())
	stopConsumers()

	st := m.Stats()
	lost := int64(accepted) - int64(consumed())
	elapsed := time.Since(start)
	fmt.Printf("\nsent %d (logs %d, events %d), accepted %d, refused %d (ErrBufferFull), confirmed %d, consumed %d unique, %d duplicates, lost %d\n",
		sent[0]+sent[1], sent[0], sent[1], accepted, refused[0]+refused[1], st.Confirmed+st.Replayed, consumed(),
		logs.dups.Load()+events.dups.Load(), lost)
	fmt.Printf("throughput %.0f msg/s over %v; reconnects %d, spooled %d, dropped %d\n",
		float64(consumed())/elapsed.Seconds(), elapsed.Round(time.Second), st.Reconnects, st.Spooled, st.Dropped)

	var problems []error
	if lost != 0 {
		problems = append(problems, fmt.Errorf("%d accepted message(s) were not consumed", lost))
	}
	if n := logs.bad.Load() + events.bad.Load(); n > 0 {
		problems = append(problems, fmt.Errorf("%d message(s) with an unknown body", n))
	}
	if base == nil {
		if !interrupted {
			problems = append(problems, fmt.Errorf("the run (%v) ended before the warm-up (%v): no baseline", o.duration, o.warmup))
		}
	} else {
		growth := mib(maxHeap) - mib(base.heap)
		fmt.Printf("after warm-up: live heap %.1f MiB at baseline, at most %.1f MiB (growth %.1f MiB, limit %.0f); goroutines %d at baseline, at most %d (limit +%d)\n",
			mib(base.heap), mib(max(maxHeap, base.heap)), max(growth, 0), o.maxHeapMiB, base.goroutines, max(maxG, base.goroutines), o.maxGoroutines)
		if growth > o.maxHeapMiB {
			problems = append(problems, fmt.Errorf("the live heap grew by %.1f MiB after the warm-up (limit %.0f MiB)", growth, o.maxHeapMiB))
		}
		if maxG-base.goroutines > o.maxGoroutines {
			problems = append(problems, fmt.Errorf("goroutines grew from %d to %d after the warm-up (limit +%d)", base.goroutines, maxG, o.maxGoroutines))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}
	fmt.Println("PASS")
	return nil
}

// cleanup deletes the run's queues and exchanges.
func cleanup(url string, exchanges, queues []string) {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "omqs-soak: cleanup:", err)
		return
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "omqs-soak: cleanup:", err)
		return
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			fmt.Fprintln(os.Stderr, "omqs-soak: cleanup:", err)
			return
		}
	}
	for _, x := range exchanges {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			fmt.Fprintln(os.Stderr, "omqs-soak: cleanup:", err)
			return
		}
	}
}
