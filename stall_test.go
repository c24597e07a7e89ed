package omqs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/fakeamqp"
)

// A broker that completes the handshake and sends heartbeats but never
// answers a channel request must not keep Start, Stop or Run past their
// context (issue 17, item 7): each returns within stallGrace of its
// context's end.

const (
	stallCtx   = 300 * time.Millisecond
	stallGrace = 2 * time.Second
)

var stalls = []struct {
	name  string
	stall fakeamqp.Stall
	want  string // the request left unanswered, "class.method"
}{
	{"channel open", fakeamqp.ChannelOpen, "20.10"},
	{"exchange declare", fakeamqp.ExchangeDeclare, "40.10"},
}

// stallServer starts a fake broker that leaves s unanswered.
func stallServer(t *testing.T, s fakeamqp.Stall) *fakeamqp.Server {
	t.Helper()
	srv, err := fakeamqp.Start(s)
	if err != nil {
		t.Fatal(err)
	}
	// Runs after the test's own cleanups: whatever is still stuck on the
	// server is released, and goleak finds it if it does not end then.
	t.Cleanup(srv.Close)
	return srv
}

// returnsInTime runs call with a context that ends after stallCtx and
// fails the test unless call returns within stallGrace of that.
func returnsInTime(t *testing.T, what string, call func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stallCtx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(stallCtx + stallGrace):
		t.Fatalf("%s did not return within %v of its context's end", what, stallGrace)
		return nil
	}
}

// wantStalled waits until srv has left want unanswered.
func wantStalled(t *testing.T, srv *fakeamqp.Server, want string) {
	t.Helper()
	waitUntil(t, 5*time.Second, "the fake broker to receive "+want, func() bool {
		for _, r := range srv.Stalled() {
			if r == want {
				return true
			}
		}
		return false
	})
}

func wantCtxConnErr(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrConnection) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "no answer from the broker") {
		t.Fatalf("%s: %v, want ErrConnection and context.DeadlineExceeded, saying the broker did not answer", what, err)
	}
}

func TestStalledBrokerStartReturnsWithContext(t *testing.T) {
	for _, s := range stalls {
		t.Run(s.name, func(t *testing.T) {
			t.Run("Manager", func(t *testing.T) {
				srv := stallServer(t, s.stall)
				m, err := NewManager(baseOpts(srv.URL(), testLogger(t), WithSpoolDir(t.TempDir()))...)
				if err != nil {
					t.Fatal(err)
				}
				err = returnsInTime(t, "Manager.Start", m.Start)
				wantCtxConnErr(t, "Manager.Start", err)
				wantStalled(t, srv, s.want)
				if err := returnsInTime(t, "Manager.Stop", m.Stop); err != nil {
					t.Fatalf("Manager.Stop after a failed Start: %v", err)
				}
			})
			t.Run("SyncPublisher", func(t *testing.T) {
				srv := stallServer(t, s.stall)
				p, err := NewSyncPublisher(baseOpts(srv.URL(), testLogger(t))...)
				if err != nil {
					t.Fatal(err)
				}
				wantCtxConnErr(t, "SyncPublisher.Start", returnsInTime(t, "SyncPublisher.Start", p.Start))
				wantStalled(t, srv, s.want)
				returnsInTime(t, "SyncPublisher.Stop", p.Stop)
			})
			t.Run("AsyncPublisher", func(t *testing.T) {
				srv := stallServer(t, s.stall)
				p, err := NewAsyncPublisher(baseOpts(srv.URL(), testLogger(t))...)
				if err != nil {
					t.Fatal(err)
				}
				wantCtxConnErr(t, "AsyncPublisher.Start", returnsInTime(t, "AsyncPublisher.Start", p.Start))
				wantStalled(t, srv, s.want)
				returnsInTime(t, "AsyncPublisher.Stop", p.Stop)
			})
		})
	}
}

// A Manager that connects in the background is stuck in the same place
// when Stop comes.
func TestStalledBrokerManagerStopReturnsWithContext(t *testing.T) {
	for _, s := range stalls {
		t.Run(s.name, func(t *testing.T) {
			srv := stallServer(t, s.stall)
			m, err := NewManager(baseOpts(srv.URL(), testLogger(t),
				WithSpoolDir(t.TempDir()), WithRetryOnFailedConnect(true))...)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			wantStalled(t, srv, s.want)
			returnsInTime(t, "Manager.Stop", m.Stop)
		})
	}
}

func TestStalledBrokerConsumerReturnsWithContext(t *testing.T) {
	for _, s := range stalls {
		t.Run(s.name, func(t *testing.T) {
			t.Run("Run", func(t *testing.T) {
				srv := stallServer(t, s.stall)
				c, err := NewSyncConsumer(baseOpts(srv.URL(), testLogger(t))...)
				if err != nil {
					t.Fatal(err)
				}
				// Run's context ending before the first connection is a
				// normal end: Run returns nil.
				if err := returnsInTime(t, "Run", c.Run); err != nil {
					t.Fatalf("Run: %v", err)
				}
				wantStalled(t, srv, s.want)
			})
			t.Run("Stop", func(t *testing.T) {
				srv := stallServer(t, s.stall)
				c, err := NewAsyncConsumer(baseOpts(srv.URL(), testLogger(t))...)
				if err != nil {
					t.Fatal(err)
				}
				runErr := make(chan error, 1)
				go func() { runErr <- c.Run(context.Background()) }()
				wantStalled(t, srv, s.want)
				if err := returnsInTime(t, "Stop", c.Stop); err != nil {
					t.Fatalf("Stop: %v", err)
				}
				select {
				case err := <-runErr:
					if err != nil {
						t.Fatalf("Run: %v", err)
					}
				case <-time.After(stallGrace):
					t.Fatal("Run did not return after Stop")
				}
			})
		})
	}
}
