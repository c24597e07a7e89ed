package omqs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoutesOwn(t *testing.T) {
	t.Parallel()
	own := func(kind string, keys ...string) topology {
		return topology{exchange: "x", kind: kind, queue: "q", queueDurable: true, keys: keys}
	}
	for _, c := range []struct {
		name string
		topo topology
		key  string
		want bool
	}{
		{"topic, pattern matches", own("topic", "other", "app.*.event"), "app.orders.event", true},
		{"topic, # matches", own("topic", "app.#"), "app", true},
		{"topic, no pattern matches", own("topic", "app.*"), "app.a.b", false},
		{"direct, same key", own("direct", "a", "b"), "b", true},
		{"direct, a pattern is a plain key", own("direct", "a.*"), "a.b", false},
		{"fanout, any key", own("fanout"), "anything", true},
		{"headers route by headers", own("headers", "k"), "k", false},
		{"a custom exchange type", own("x-consistent-hash", "k"), "k", false},
		{"no keys", own("topic"), "k", false},
		{"non-durable queue", topology{exchange: "x", kind: "topic", queue: "q", keys: []string{"#"}}, "k", false},
		{"queue that expires", topology{exchange: "x", kind: "topic", queue: "q", queueDurable: true, expires: time.Minute, keys: []string{"#"}}, "k", false},
		{"no queue", topology{exchange: "x", kind: "topic", keys: []string{"#"}}, "k", false},
		{"default exchange", topology{kind: "direct", queue: "q", queueDurable: true, keys: []string{"q"}}, "q", false},
	} {
		if got := c.topo.routesOwn(c.key); got != c.want {
			t.Errorf("%s: routesOwn(%q) = %v, want %v", c.name, c.key, got, c.want)
		}
	}
}

// A message the publisher's own binding routes goes without the mandatory
// flag unless WithMandatory(true): with that binding removed behind the
// publisher's back, the broker drops it by default and returns it with
// WithMandatory(true). A key no own binding routes is returned either way.
func TestMandatoryOwnBinding(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testMandatoryOwnBinding)
}

func testMandatoryOwnBinding(t *testing.T, url string) {
	ctx := testCtx(t, 30*time.Second)
	for _, c := range []struct {
		name      string
		opts      []Option
		wantOwned uint64 // returns for the own key once unbound
	}{
		{"default", nil, 0},
		{"WithMandatory(true)", []Option{WithMandatory(true)}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := testNames(t, url)
			cleanupOn(t, url, []string{n.Exchange}, []string{n.Queue})
			var returns atomic.Uint64
			opts := append([]Option{WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
				WithExchange(n.Exchange, "topic", true), WithQueue(n.Queue), WithQueueDurable(true),
				WithKeys(n.Key + ".*"), WithReturnHandler(func(Returned) { returns.Add(1) })}, c.opts...)
			p := startedPublisher(t, ctx, NewAsyncPublisher, opts...)
			defer p.Stop(context.Background())

			// Bound: delivered whichever way it is flagged.
			if err := p.Publish(ctx, n.Key+".a", []byte("bound")); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			wantDepth(t, url, n.Queue, 1)

			ch := backendChannel(t, url)
			if err := ch.QueueUnbind(n.Queue, n.Key+".*", n.Exchange, nil); err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(ctx, n.Key+".b", []byte("own key, unbound")); err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(ctx, "no.such.binding", []byte("never bound")); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			want := c.wantOwned + 1
			waitUntil(t, 10*time.Second, "the returns", func() bool { return p.Stats().Returned >= want })
			if err := p.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Returned != want || st.Confirmed != 3 {
				t.Fatalf("stats %+v, want %d returned of 3 confirmed", st, want)
			}
			if got := returns.Load(); got != want {
				t.Fatalf("return handler called %d times, want %d", got, want)
			}
			wantDepth(t, url, n.Queue, 1)
		})
	}
}

// A Manager's events follow the same rule, and it takes WithMandatory.
func TestManagerMandatoryEvents(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		for _, c := range []struct {
			name string
			opts []Option
			want uint64
		}{{"default", nil, 0}, {"WithMandatory(true)", []Option{WithMandatory(true)}, 1}} {
			t.Run(c.name, func(t *testing.T) {
				cfg, _ := backendConfig(t, url)
				m := startManager(t, append([]Option{WithConfig(cfg), WithURL(url), WithLogger(testLogger(t))}, c.opts...)...)
				ch := backendChannel(t, url)
				for _, k := range cfg.EventWorker.Keys {
					if err := ch.QueueUnbind(cfg.EventWorker.Queue, k, cfg.EventWorker.Exchange, nil); err != nil {
						t.Fatal(err)
					}
				}
				if err := m.SendEvent("own key, unbound", cfg.EventWorker.Keys[0]); err != nil {
					t.Fatal(err)
				}
				if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
					t.Fatal(err)
				}
				if st := m.Stats().Events; st.Returned != c.want || st.Confirmed != 1 {
					t.Fatalf("event stats %+v, want %d returned of 1 confirmed", st, c.want)
				}
			})
		}
	})
}
