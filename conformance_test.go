package omqs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/transport"
)

// The behaviour tests of this package run once per backend: on the
// in-process broker (memory://) and on RabbitMQ. The same assertions hold on
// both, so the in-process broker cannot drift from the real thing. Tests that
// need what only a network broker has (a TCP proxy that cuts, stalls or
// refuses connections, TLS, credentials) run on RabbitMQ alone and say so.

// backend is a broker the behaviour tests run against.
type backend struct {
	name string
	// url returns the broker URL for one subtest. The memory backend gives
	// each subtest a broker of its own; the RabbitMQ backend skips the
	// subtest (or fails it, with OMQS_REQUIRE_BROKER=1) when no broker
	// answers, so that the memory half runs anywhere.
	url func(t *testing.T) string
}

// backends lists the brokers every behaviour test runs on: the in-process
// broker first, then RabbitMQ.
func backends() []backend {
	return []backend{
		{name: "memory", url: func(t *testing.T) string { return memoryURL(t) }},
		{name: "rabbitmq", url: func(t *testing.T) string { return brokertest.URL(t) }},
	}
}

// forEachBackend runs behaviour as one subtest per backend.
func forEachBackend(t *testing.T, behaviour func(t *testing.T, url string)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { behaviour(t, b.url(t)) })
	}
}

// memoryURL returns the URL of an in-process broker no other test uses. When
// the test ends, every connection to it must be closed (a client that
// leaves one open fails the test); then the broker is emptied.
func memoryURL(t testing.TB) string {
	t.Helper()
	name := brokertest.Unique("omqs-test")
	b := membroker.Get(name)
	t.Cleanup(func() {
		if n := b.Connections(); n != 0 {
			t.Errorf("%d connection(s) to memory://%s still open when the test ended", n, name)
		}
		b.Reset()
	})
	return "memory://" + name
}

// isMemory reports whether url names the in-process broker.
func isMemory(url string) bool { return strings.HasPrefix(url, "memory://") }

// testNames returns an exchange, a queue and a key unique to the test. On
// RabbitMQ they are deleted when the test ends; a memory broker is the
// test's own and emptied anyway.
func testNames(t testing.TB, url string) brokertest.Names {
	t.Helper()
	if isMemory(url) {
		return brokertest.Names{
			Exchange: brokertest.Unique("omqs.test.x"),
			Queue:    brokertest.Unique("omqs.test.q"),
			Key:      brokertest.Unique("omqs.test.k"),
		}
	}
	return brokertest.NewNames(t)
}

// cleanupOn deletes exchanges and queues from RabbitMQ when the test ends;
// on a memory broker it does nothing.
func cleanupOn(t testing.TB, url string, exchanges, queues []string) {
	t.Helper()
	if !isMemory(url) {
		brokertest.Cleanup(t, exchanges, queues)
	}
}

// backendChannel opens a channel through the transport seam, on a
// connection of its own that is closed when the test ends, for declarations
// and assertions on the broker's state.
func backendChannel(t testing.TB, url string) transport.Channel {
	t.Helper()
	eps, err := transport.ParseURLs(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, eps[0], transport.DialOptions{Name: "omqs test " + t.Name()})
	if err != nil {
		t.Fatalf("backendChannel: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("backendChannel: %v", err)
	}
	return ch
}

// queueDepth returns how many ready messages queue holds, by a passive
// declare on ch. A missing queue fails the test.
func queueDepth(t testing.TB, ch transport.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive declare of queue %s: %v", queue, err)
	}
	return q.Messages
}
