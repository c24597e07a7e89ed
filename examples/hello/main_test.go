package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// TestMain fails the tests if a goroutine of the program outlives run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunOnTheInProcessBroker(t *testing.T) {
	var out lockedbuf.Buffer
	if err := run(context.Background(), "memory://", 10*time.Second, &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		` [x] event HelloKey: "Hello world"`,
		` [x] event HelloKey: "Hello again"`,
		` [x] log info: "hello from the log lane"`,
		` [x] log warning: "the disk is 91% full"`,
		` [x] log error: "the mail server did not answer"`,
	}
	if len(lines) != len(want)+2 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want)+2, out.String())
	}
	if !strings.HasPrefix(lines[0], "running on the in-process broker (memory://); pass -url amqp://") {
		t.Errorf("first line %q does not say it runs on the in-process broker", lines[0])
	}
	// Events and logs arrive on two consumers: their lines interleave, but
	// each consumer's come in the order sent.
	received := lines[1 : len(lines)-1]
	if got := filter(received, " [x] event"); strings.Join(got, "\n") != strings.Join(want[:2], "\n") {
		t.Errorf("event lines %q, want %q", got, want[:2])
	}
	if got := filter(received, " [x] log"); strings.Join(got, "\n") != strings.Join(want[2:], "\n") {
		t.Errorf("log lines %q, want %q", got, want[2:])
	}
	if last := lines[len(lines)-1]; last != "received 2 events and 3 logs; stopped cleanly" {
		t.Errorf("last line %q", last)
	}
}

func filter(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// TestRunTakesNothingFromTheSharedQueue: an event another service left in
// the tutorial's shared queue "omqs.queue.event" is still there after a run.
func TestRunTakesNothingFromTheSharedQueue(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"memory", "memory://hello-shared-queue"},
		{"rabbitmq", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if url == "" {
				url = brokertest.URL(t)
				brokertest.LockLegacyNames(t) // no other package's test on omqs.queue.event meanwhile
			}
			foreign := fmt.Sprintf(`{"invoice":42,"test":%q}`, brokertest.Unique("hello"))
			// Another service's backend: its event waits in omqs.queue.event.
			m, err := omqs.NewManager(omqs.WithURL(url), omqs.WithConfig(omqs.DefaultConfig()), omqs.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.SendEvent(foreign, ""); err != nil {
				t.Fatal(err)
			}
			if err := m.Stop(ctx); err != nil {
				t.Fatal(err)
			}

			var out lockedbuf.Buffer
			if err := run(context.Background(), url, 20*time.Second, &out); err != nil {
				t.Fatalf("run: %v\noutput:\n%s", err, out.String())
			}
			if strings.Contains(out.String(), "invoice") {
				t.Errorf("the run received the other service's event:\n%s", out.String())
			}

			// The other service's worker still gets its event. Whatever else
			// the shared queue holds goes back to it.
			got := make(chan struct{})
			var once sync.Once
			c, err := omqs.NewEventMsgConsumer(omqs.WithURL(url), omqs.WithConfig(omqs.DefaultConfig()),
				omqs.WithLogger(quiet), omqs.WithMaxRedeliveries(0),
				omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error {
					if string(d.Body) != foreign {
						return omqs.Requeue(nil)
					}
					once.Do(func() { close(got) })
					return nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Run(context.Background()) }()
			select {
			case <-got:
			case err := <-done:
				t.Fatalf("the other service's consumer stopped: %v", err)
			case <-ctx.Done():
				t.Error("the other service's event is gone from " + omqs.EventQueue)
			}
			if err := c.Stop(context.Background()); err != nil {
				t.Error(err)
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
}

// TestRunBesideAConsumerOfTheSharedQueue: another consumer of the shared
// event queue, bound to the example's key, does not take the run's events.
func TestRunBesideAConsumerOfTheSharedQueue(t *testing.T) {
	const url = "memory://hello-competing-consumer"
	other, err := omqs.NewEventMsgConsumer(omqs.WithURL(url), omqs.WithKeys(eventKey), omqs.WithLogger(quiet),
		omqs.WithCallback(func(context.Context, omqs.Delivery) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- other.Run(context.Background()) }()
	defer func() {
		if err := other.Stop(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !other.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("the other consumer is not ready")
		}
		select {
		case err := <-done:
			t.Fatalf("the other consumer stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	var out lockedbuf.Buffer
	if err := run(context.Background(), url, 20*time.Second, &out); err != nil {
		t.Fatalf("run beside another consumer of %s: %v\noutput:\n%s", omqs.EventQueue, err, out.String())
	}
}

// TestRunSaysWhyItTimedOut: a run whose time ends before its consumers
// consume says which one and where it tried. The "broker" accepts the
// connection and never answers, so no consumer can be ready in time.
func TestRunSaysWhyItTimedOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	url := "amqp://guest:guest@" + ln.Addr().String() + "/"
	var out lockedbuf.Buffer
	err = run(context.Background(), url, 300*time.Millisecond, &out)
	if err == nil {
		t.Fatalf("run against a silent broker succeeded:\n%s", out.String())
	}
	for _, want := range []string{"was not consuming within", ln.Addr().String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

var quiet = slog.New(slog.DiscardHandler)

func TestRunRefusesABadURL(t *testing.T) {
	var out lockedbuf.Buffer
	if err := run(context.Background(), "nats://localhost", time.Second, &out); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("run with a bad URL: %v", err)
	}
}
