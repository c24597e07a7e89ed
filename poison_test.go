package omqs

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/membroker"
)

// killer closes every connection to the in-process broker name as soon as
// it opens, until stopped, and counts the connections it closed: each is a
// session that died young.
type killer struct {
	closed atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

func killConnections(t *testing.T, name string) *killer {
	t.Helper()
	k := &killer{stop: make(chan struct{}), done: make(chan struct{})}
	b := membroker.Get(name)
	go func() {
		defer close(k.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-k.stop:
				return
			case <-tick.C:
			}
			if n := b.Connections(); n > 0 {
				b.CloseAllConnections("killed by the test")
				k.closed.Add(int64(n))
			}
		}
	}()
	t.Cleanup(k.end)
	return k
}

// end stops the killer and waits for it.
func (k *killer) end() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}

// TestConsumerBacksOffAfterYoungSessions: a consumer whose connection is
// closed as soon as it opens (as a delivery amqp091 cannot parse does)
// waits RECONNECT_INTERVAL, then twice as long each time, instead of
// reconnecting at once; after a few it says what may be happening.
func TestConsumerBacksOffAfterYoungSessions(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	l, buf := consumerLogger(t)
	opts := namedOpts(url, l, n, WithReconnect(20*time.Millisecond, 0))
	runConsumer(t, NewSyncConsumer, opts...)

	k := killConnections(t, strings.TrimPrefix(url, "memory://"))
	start := time.Now()
	waitUntil(t, 10*time.Second, "5 sessions closed", func() bool { return k.closed.Load() >= 5 })
	// 20+40+80+160 ms between them at least; at once, it takes a few ms.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("5 sessions closed within %v: the consumer reconnects without waiting", took)
	}
	waitUntil(t, 10*time.Second, "the report of sessions dying young", func() bool {
		return strings.Contains(buf.String(), "times in a row within 1s of opening")
	})
	k.end()
	if got := k.closed.Load(); got > 8 {
		t.Fatalf("%d sessions closed, want a handful", got)
	}
}
