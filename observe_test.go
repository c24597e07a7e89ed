package omqs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeObserver records what the hooks are told. It injects a fixed trace
// context when ctx carries fakeSpan.
type fakeObserver struct {
	mu       sync.Mutex
	comps    []*Component
	closed   int
	injected int
	settled  []bool
	ended    []Outcome
	started  int
}

type fakeSpan struct{}

func (o *fakeObserver) Observe(c *Component) ComponentObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.comps = append(o.comps, c)
	return o
}

func (o *fakeObserver) Inject(ctx context.Context, key string) (string, string) {
	if ctx.Value(fakeSpan{}) == nil {
		return "", ""
	}
	o.mu.Lock()
	o.injected++
	o.mu.Unlock()
	return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v"
}

func (o *fakeObserver) Settled(_ string, _ time.Duration, ack bool) {
	o.mu.Lock()
	o.settled = append(o.settled, ack)
	o.mu.Unlock()
}

func (o *fakeObserver) StartProcess(ctx context.Context, _ *Delivery) context.Context {
	o.mu.Lock()
	o.started++
	o.mu.Unlock()
	return ctx
}

func (o *fakeObserver) EndProcess(_ context.Context, _ *Delivery, _ time.Duration, out Outcome, _ error) {
	o.mu.Lock()
	o.ended = append(o.ended, out)
	o.mu.Unlock()
}

func (o *fakeObserver) Close() {
	o.mu.Lock()
	o.closed++
	o.mu.Unlock()
}

func (o *fakeObserver) component(kind, lane string) *Component {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.comps {
		if c.Kind == kind && c.Lane == lane {
			return c
		}
	}
	return nil
}

// A full buffer counts each refusal, in Stats and in the lane's Snapshot.
func TestObserverRefused(t *testing.T) {
	obs := &fakeObserver{}
	w := &blockingWorker{release: make(chan struct{})}
	cfg, _ := testConfig(t)
	cfg.Global.BufferSize = 2
	m := startManager(t, WithConfig(cfg), WithURL(memoryURL(t)), WithLogger(testLogger(t)), WithEventWorker(w), WithObserver(obs))
	defer close(w.release)
	refused := 0
	for range 10 {
		if err := m.SendEvent("e", ""); errors.Is(err, ErrBufferFull) {
			refused++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	for m.SendEventContext(ctx, "e", "") == nil {
	}
	refused++
	if refused < 8 {
		t.Fatalf("only %d sends refused", refused)
	}
	if got := m.Stats().Events.Refused; got != uint64(refused) {
		t.Errorf("Stats().Events.Refused = %d, want %d", got, refused)
	}
	c := obs.component("Manager", "event")
	if c == nil {
		t.Fatal("the event lane was not registered")
	}
	if s := c.Snapshot(); s.Refused != uint64(refused) || s.Depth != 2 {
		t.Errorf("Snapshot: Refused %d Depth %d, want %d and 2", s.Refused, s.Depth, refused)
	}
	if c.Exchange != cfg.EventWorker.Exchange {
		t.Errorf("event lane's exchange %q", c.Exchange)
	}
}

// Send*Context carries the observer's trace context to the worker in the
// message headers; plain Send* and a context without a span carry none.
func TestObserverInjectsTraceContext(t *testing.T) {
	obs := &fakeObserver{}
	w := &blockingWorker{release: closedChan()}
	cfg, _ := testConfig(t)
	m := startManager(t, WithConfig(cfg), WithURL(memoryURL(t)), WithLogger(testLogger(t)), WithEventWorker(w), WithObserver(obs))
	traced := context.WithValue(context.Background(), fakeSpan{}, true)
	for _, send := range []func() error{
		func() error { return m.SendEventContext(traced, "traced", "") },
		func() error { return m.SendEvent("plain", "") },
		func() error { return m.SendEventContext(context.Background(), "nospan", "") },
	} {
		if err := send(); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "3 messages", func() bool { return len(w.bodies()) == 3 })
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, msg := range w.got {
		tp, ok := msg.Headers[HeaderTraceparent]
		if want := string(msg.Body) == "traced"; ok != want {
			t.Errorf("%s: traceparent %v present %v, want %v", msg.Body, tp, ok, want)
		}
		if string(msg.Body) == "traced" && msg.Headers[HeaderTracestate] != "k=v" {
			t.Errorf("tracestate %v", msg.Headers[HeaderTracestate])
		}
	}
}

// A publisher injects on Publish, tells the observer each confirm, and
// closes its observation on Stop; a consumer counts every outcome.
func TestObserverPublisherAndConsumer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		obs := &fakeObserver{}
		n := testNames(t, url)
		attempts := map[string]int{}
		var mu sync.Mutex
		got := make(chan Delivery, 16)
		cb := func(ctx context.Context, d Delivery) error {
			mu.Lock()
			attempts[string(d.Body)]++
			a := attempts[string(d.Body)]
			mu.Unlock()
			got <- d
			switch string(d.Body) {
			case "reject":
				return errors.New("no")
			case "requeue":
				if a == 1 {
					return Requeue(errors.New("later"))
				}
			case "panic":
				panic("boom")
			}
			return nil
		}
		runConsumer(t, NewAsyncConsumer, WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
			WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue), WithKeys("#"), WithConcurrency(1),
			WithCallback(cb), WithObserver(obs))
		p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
			WithExchange(n.Exchange, "topic", false), WithQueue(""), WithKeys(n.Key), WithObserver(obs))
		if err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 20*time.Second)
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		traced := context.WithValue(ctx, fakeSpan{}, true)
		for _, b := range []string{"ack", "reject", "requeue", "panic"} {
			if err := p.Publish(traced, "", []byte(b)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			d := <-got
			if d.Headers[HeaderTraceparent] == nil {
				t.Errorf("%s arrived without traceparent", d.Body)
			}
		}
		cons := obs.component("AsyncConsumer", "")
		waitUntil(t, 10*time.Second, "the outcomes", func() bool {
			obs.mu.Lock()
			defer obs.mu.Unlock()
			return len(obs.ended) == 5
		})
		if err := p.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		s := cons.Snapshot()
		want := Snapshot{Deliveries: 5, Acks: 2, Rejects: 2, Requeues: 1, Panics: 1, Connected: true}
		if fmt.Sprint(s.Deliveries, s.Acks, s.Rejects, s.Requeues, s.Panics, s.Connected) !=
			fmt.Sprint(want.Deliveries, want.Acks, want.Rejects, want.Requeues, want.Panics, want.Connected) {
			t.Errorf("consumer snapshot %+v, want %+v", s, want)
		}
		ps := obs.component("AsyncPublisher", "").Snapshot()
		if ps.Confirmed != 4 || ps.Accepted != 4 {
			t.Errorf("publisher snapshot %+v", ps.LaneStats)
		}
		obs.mu.Lock()
		defer obs.mu.Unlock()
		if obs.injected != 4 || len(obs.settled) != 4 || obs.started != 5 || len(obs.ended) != 5 {
			t.Errorf("injected %d settled %v started %d ended %v", obs.injected, obs.settled, obs.started, obs.ended)
		}
		if obs.closed != 1 {
			t.Errorf("%d observations closed after the publisher's Stop, want 1", obs.closed)
		}
	})
}
