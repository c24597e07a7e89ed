package omqs

import (
	"strings"
	"testing"
	"time"
)

// After a reconnect, the "connected" line's resending counts the messages
// written to the lost connection, which is what Stats().Republished counts;
// the messages held while down (never written) are counted apart. The line,
// and the Dialer's, name the publisher and its kind.
func TestEngineReconnectLogMatchesRepublished(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	l, logs := consumerLogger(t)
	c := engineConfigFor(t, url, 3, nil)
	c.logger = l
	c.kind, c.name = "EventMsgWorker", "web.event"
	c.topo = topology{exchange: n.Exchange, kind: "direct", queue: n.Queue, queueType: "classic", keys: []string{n.Key}}
	e := newEngine(c)
	t.Cleanup(func() { _ = engineStop(t, e) })
	ctx := testCtx(t, 20*time.Second)
	e.mu.Lock()
	e.state = stateDown
	e.mu.Unlock()
	publish := func(body string) {
		t.Helper()
		m, err := e.newMsg(n.Key, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing reads the first session's confirms: what is published on it
	// stays outstanding.
	s1, err := e.connect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e.install(s1)
	for range 3 {
		publish("written")
	}
	e.teardown(s1)
	for range 2 {
		publish("held")
	}
	s2, err := e.connect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e.install(s2)
	served := make(chan error, 1)
	go func() { served <- e.serve(s2) }()
	waitUntil(t, 10*time.Second, "the confirms", func() bool { return e.st.snapshot().Confirmed == 5 })
	if got := e.st.snapshot().Republished; got != 3 {
		t.Fatalf("Republished = %d, want 3", got)
	}
	out := logs.String()
	if !strings.Contains(out, `msg="omqs: connected" publisher=web.event kind=EventMsgWorker resending=3 held=2`) {
		t.Fatalf("the reconnect line does not say resending=3 held=2 with the publisher and its kind:\n%s", out)
	}
	if err := engineStop(t, e); err != nil {
		t.Fatal(err)
	}
	if err := engineRecv(t, served, "serve to end"); err != nil {
		t.Fatal(err)
	}
}

// The Dialer's lines name the consumer or publisher whose connection failed.
func TestConnectFailedLogNamesComponent(t *testing.T) {
	t.Parallel()
	l, logs := consumerLogger(t)
	c, err := NewLogMsgConsumer(nil, WithConfig(DefaultConfig()), WithURL(engineRefusedURL(t)), WithLogger(l),
		WithName("audit"), WithReconnect(10*time.Millisecond, 2), WithCallback((&recorder{}).callback))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(testCtx(t, 20*time.Second)); err == nil {
		t.Fatal("Run succeeded against a refused port")
	}
	if out := logs.String(); !strings.Contains(out, "consumer=audit kind=LogMsgConsumer") || !strings.Contains(out, "connect failed") {
		t.Fatalf("the connect failures do not name the consumer:\n%s", out)
	}

	l2, logs2 := consumerLogger(t)
	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(engineRefusedURL(t)), WithLogger(l2),
		WithName("billing"), WithReconnect(10*time.Millisecond, 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(testCtx(t, 20*time.Second)); err == nil {
		t.Fatal("Start succeeded against a refused port")
	}
	if out := logs2.String(); !strings.Contains(out, "publisher=billing kind=SyncPublisher") || !strings.Contains(out, "connect failed") {
		t.Fatalf("the connect failures do not name the publisher:\n%s", out)
	}
}
