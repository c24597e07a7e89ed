package omqs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// Stop while the broker is unreachable spools what is held at once instead
// of waiting for confirms that cannot come until its context ends (issue
// 11, item 13: a 30 s wait is longer than a Kubernetes grace period).

// stopDownLimit is how long such a Stop may take.
const stopDownLimit = 1500 * time.Millisecond

// engineDown reports whether e has no connection up.
func engineDown(e *engine) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sess == nil
}

func TestManagerStopWithBrokerGoneSpoolsAtOnce(t *testing.T) {
	url := brokertest.URL(t)
	proxy := newProxy(t, url)
	cfg, _ := backendConfig(t, url)
	cfg.Global.ReconnectTimes = 0 // keep trying: nothing is spooled before Stop
	cfg.Global.MaxInFlight = 8    // more than that waits in the Manager's buffers
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, proxy)), WithLogger(testLogger(t)))
	logs, events := m.lanes[logLane].worker.(*LogMsgWorker).e, m.lanes[eventLane].worker.(*EventMsgWorker).e

	proxy.Refuse(true)
	proxy.Cut()
	waitUntil(t, 10*time.Second, "both workers to lose their connection", func() bool {
		return engineDown(logs) && engineDown(events)
	})
	const nLogs, nEvents = 20, 30
	for i := range nEvents {
		if err := m.SendEvent(fmt.Sprintf("event %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range nLogs {
		if err := m.SendInfo(fmt.Sprintf("log %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	err := m.Stop(ctx)
	if took := time.Since(begin); took > stopDownLimit {
		t.Errorf("Stop took %v with the broker gone, want at most %v", took, stopDownLimit)
	}
	if !errors.Is(err, ErrSpooled) || !strings.Contains(err.Error(), fmt.Sprintf("%d message(s)", nLogs+nEvents)) {
		t.Errorf("Stop: %v, want ErrSpooled saying %d message(s)", err, nLogs+nEvents)
	}
	t.Logf("Stop: %v", err)
	for _, f := range []struct {
		file   string
		prefix string
		n      int
	}{{"backup.evt", "event", nEvents}, {"backup.log", "log", nLogs}} {
		recs := spoolRecords(t, cfg.Log.Folder, f.file)
		if len(recs) != f.n {
			t.Fatalf("%s holds %d record(s), want %d", f.file, len(recs), f.n)
		}
		for i, r := range recs {
			if want := fmt.Sprintf("%s %d", f.prefix, i); r.Body != want {
				t.Fatalf("%s record %d is %q, want %q (in the order sent)", f.file, i, r.Body, want)
			}
		}
	}
}

func TestPublisherStopWithBrokerGoneSpoolsAtOnce(t *testing.T) {
	url := brokertest.URL(t)
	proxy := newProxy(t, url)
	n := testNames(t, url)
	cleanupOn(t, url, []string{n.Exchange}, nil)
	dir := t.TempDir()
	p := startedPublisher(t, testCtx(t, 30*time.Second), NewAsyncPublisher,
		baseOpts(proxyURL(url, proxy), testLogger(t),
			WithExchange(n.Exchange, "topic", false), WithKeys(n.Key),
			WithSpoolDir(dir), WithReconnect(50*time.Millisecond, 0))...)

	proxy.Refuse(true)
	proxy.Cut()
	waitUntil(t, 10*time.Second, "the publisher to lose its connection", func() bool { return engineDown(p.e) })
	const N = 10
	for i := range N {
		if err := p.Publish(context.Background(), "", fmt.Appendf(nil, "m %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	err := p.Stop(ctx)
	if took := time.Since(begin); took > stopDownLimit {
		t.Errorf("Stop took %v with the broker gone, want at most %v", took, stopDownLimit)
	}
	if !errors.Is(err, ErrNotConfirmed) || !errors.Is(err, ErrConnection) || errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), fmt.Sprintf("%d message(s)", N)) {
		t.Errorf("Stop: %v, want ErrNotConfirmed and ErrConnection saying %d message(s)", err, N)
	}
	if recs := spoolRecords(t, dir, filepath.Base(p.e.sp.Path())); len(recs) != N {
		t.Fatalf("spool holds %d record(s), want %d", len(recs), N)
	}
}
