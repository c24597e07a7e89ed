package reconnect

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/transport"
)

func endpoints(t *testing.T, urls string) []transport.Endpoint {
	t.Helper()
	eps, err := transport.ParseURLs(urls)
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

func noWait(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// dialledBroker returns which of the memory brokers named names the
// connection being set up reaches: the one with a connection open (Connect
// closes a connection whose setup failed before it dials the next address).
func dialledBroker(t *testing.T, names ...string) string {
	t.Helper()
	found := ""
	for _, n := range names {
		switch membroker.Get(n).Connections() {
		case 0:
		case 1:
			if found != "" {
				t.Fatalf("connections open to both %s and %s", found, n)
			}
			found = n
		default:
			t.Fatalf("%d connections open to %s", membroker.Get(n).Connections(), n)
		}
	}
	if found == "" {
		t.Fatalf("no connection open to any of %v", names)
	}
	return found
}

func TestConnectTriesEndpointsInTurn(t *testing.T) {
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-a,memory://rc-b"), Times: 3, Wait: noWait}
	var tried []string
	c, err := d.Connect(context.Background(), func(context.Context, transport.Conn) error {
		name := dialledBroker(t, "rc-a", "rc-b")
		tried = append(tried, name)
		if name == "rc-a" {
			return errors.New("down")
		}
		return nil
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseDeadline(time.Now().Add(time.Second))
	if len(tried) != 2 || tried[0] != "rc-a" || tried[1] != "rc-b" {
		t.Fatalf("tried %v, want rc-a then rc-b", tried)
	}
	if ep, ok := d.Endpoint(); !ok || ep.Name != "rc-b" {
		t.Fatalf("Endpoint() = %v, %v; want rc-b (the endpoint that worked)", ep, ok)
	}
}

func TestConnectGivesUpAfterTimes(t *testing.T) {
	waits := 0
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-c"), Times: 4, Wait: func(ctx context.Context, _ time.Duration) error {
		waits++
		return nil
	}}
	boom := errors.New("boom")
	_, err := d.Connect(context.Background(), func(context.Context, transport.Conn) error { return boom }, false)
	var ge *GiveUpError
	if !errors.As(err, &ge) || ge.Attempts != 4 || !errors.Is(err, boom) {
		t.Fatalf("err = %v, want GiveUpError after 4 attempts wrapping boom", err)
	}
	if waits != 3 {
		t.Fatalf("waited %d times, want 3", waits)
	}
}

func TestConnectFailFastOnPermanent(t *testing.T) {
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-d"), Times: 0, Wait: noWait}
	perm := &PermanentError{Err: errors.New("inequivalent arg")}
	_, err := d.Connect(context.Background(), func(context.Context, transport.Conn) error { return perm }, true)
	if !errors.As(err, new(*PermanentError)) {
		t.Fatalf("err = %v, want the permanent error at once", err)
	}
}

func TestConnectStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-e"), Interval: time.Hour}
	attempts := 0
	_, err := d.Connect(ctx, func(context.Context, transport.Conn) error {
		attempts++
		cancel()
		return errors.New("fail")
	}, false)
	if !errors.Is(err, context.Canceled) || attempts != 1 {
		t.Fatalf("err = %v after %d attempts, want context.Canceled after 1", err, attempts)
	}
}

// TestConnectInterruptedKeepsLastError: when ctx ends between attempts, the
// error wraps both ctx's error and why the last attempt failed.
func TestConnectInterruptedKeepsLastError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-f"), Wait: func(ctx context.Context, _ time.Duration) error {
		cancel()
		return ctx.Err()
	}}
	boom := errors.New("boom")
	_, err := d.Connect(ctx, func(context.Context, transport.Conn) error { return boom }, false)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, boom) {
		t.Fatalf("err = %v, want context.Canceled and the last attempt's error", err)
	}
}

// TestConnectInterruptedDuringAttempt: when ctx ends during an attempt whose
// error is only the interruption, the error wraps the previous attempt's.
func TestConnectInterruptedDuringAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-g"), Wait: noWait}
	boom := errors.New("boom")
	attempts := 0
	_, err := d.Connect(ctx, func(ctx context.Context, _ transport.Conn) error {
		attempts++
		if attempts == 1 {
			return boom
		}
		cancel()
		return ctx.Err()
	}, false)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, boom) || attempts != 2 {
		t.Fatalf("err = %v after %d attempts, want context.Canceled and boom after 2", err, attempts)
	}
}

// TestConnectPrefersFirstAddress follows one Dialer through a series of
// reconnects on a three-node "cluster" whose nodes go down and come back:
// each new connection goes to the first address that answers, in MQURL's
// order, except that a reconnect tries the address it just lost last in
// its first round.
func TestConnectPrefersFirstAddress(t *testing.T) {
	nodes := []string{"rc-n1", "rc-n2", "rc-n3"}
	d := &Dialer{Endpoints: endpoints(t, "memory://rc-n1,memory://rc-n2,memory://rc-n3"), Times: 3, Wait: noWait}
	steps := []struct {
		name  string
		down  []string // nodes refusing this connection
		tried []string
		want  string
	}{
		{name: "first connection: the first address", tried: []string{"rc-n1"}, want: "rc-n1"},
		{name: "connection killed, node up: lost address last", tried: []string{"rc-n2"}, want: "rc-n2"},
		{name: "next reconnect: back to the first", tried: []string{"rc-n1"}, want: "rc-n1"},
		{name: "first node stopped: fails over to the second", down: []string{"rc-n1"},
			tried: []string{"rc-n2"}, want: "rc-n2"},
		{name: "second node stopped too, first still down: the third", down: []string{"rc-n1", "rc-n2"},
			tried: []string{"rc-n1", "rc-n3"}, want: "rc-n3"},
		{name: "first node back: the connection goes back to it", tried: []string{"rc-n1"}, want: "rc-n1"},
		{name: "only the lost node answers: tried last, then taken", down: []string{"rc-n2", "rc-n3"},
			tried: []string{"rc-n2", "rc-n3", "rc-n1"}, want: "rc-n1"},
		{name: "every node down for one round: later rounds in MQURL order",
			down:  []string{"rc-n1", "rc-n2", "rc-n3"}, // for the first round only (see below)
			tried: []string{"rc-n2", "rc-n3", "rc-n1", "rc-n1"}, want: "rc-n1"},
	}
	for _, st := range steps {
		var tried []string
		c, err := d.Connect(context.Background(), func(context.Context, transport.Conn) error {
			name := dialledBroker(t, nodes...)
			tried = append(tried, name)
			if len(tried) <= len(nodes) {
				for _, down := range st.down {
					if name == down {
						return errors.New("connection refused")
					}
				}
			}
			return nil
		}, false)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		c.CloseDeadline(time.Now().Add(time.Second))
		ep, _ := d.Endpoint()
		if ep.Name != st.want || !slices.Equal(tried, st.tried) {
			t.Errorf("%s: tried %v, connected to %s; want tried %v, connected to %s", st.name, tried, ep.Name, st.tried, st.want)
		}
	}
}
