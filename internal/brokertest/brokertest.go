// Package brokertest gives integration tests a RabbitMQ broker: its URL,
// unique names that are deleted after the test, a raw amqp091 channel for
// assertions and rabbitmqctl for tests that break things on purpose.
//
// When no broker answers, tests skip with a message saying how to run them,
// unless OMQS_REQUIRE_BROKER=1, where they fail.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultURL is the broker tests use unless OMQS_TEST_AMQP_URL names another.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

var (
	probeOnce sync.Once
	probeErr  error
)

// URL returns the broker URL for an integration test. When the broker does
// not answer, the test is skipped, or fails if OMQS_REQUIRE_BROKER=1.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("OMQS_TEST_AMQP_URL")
	if u == "" {
		u = DefaultURL
	}
	probeOnce.Do(func() { probeErr = probe(u) })
	if probeErr != nil {
		if Required() {
			t.Fatalf("RabbitMQ is required (OMQS_REQUIRE_BROKER=1) but does not answer at %s: %v", redact(u), probeErr)
		}
		t.Skipf("skipping integration test: no RabbitMQ at %s (%v); start one, set OMQS_TEST_AMQP_URL, or set OMQS_REQUIRE_BROKER=1 to make this a failure", redact(u), probeErr)
	}
	return u
}

// Required reports whether OMQS_REQUIRE_BROKER=1 is set.
func Required() bool { return os.Getenv("OMQS_REQUIRE_BROKER") == "1" }

func probe(u string) error {
	c, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

func redact(u string) string {
	if p, err := amqpURIPassword(u); err == nil && p != "" {
		return strings.ReplaceAll(u, ":"+p+"@", ":xxxxx@")
	}
	return u
}

func amqpURIPassword(u string) (string, error) {
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return "", err
	}
	return uri.Password, nil
}

// Unique returns prefix followed by a random suffix, for exchange and queue
// names that no other test uses.
func Unique(prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return prefix + "." + hex.EncodeToString(b[:])
}

// Names are an exchange, a queue and a key unique to one test.
type Names struct {
	Exchange string
	Queue    string
	Key      string
}

// NewNames returns unique names and deletes the exchange and queue (and any
// extra names registered with Cleanup) when the test ends.
func NewNames(t testing.TB) Names {
	t.Helper()
	n := Names{
		Exchange: Unique("omqs.test.x"),
		Queue:    Unique("omqs.test.q"),
		Key:      Unique("omqs.test.k"),
	}
	Cleanup(t, []string{n.Exchange}, []string{n.Queue})
	return n
}

// Cleanup deletes the given exchanges and queues from the broker when the
// test ends (see Delete). It needs the broker only then.
func Cleanup(t testing.TB, exchanges, queues []string) {
	t.Helper()
	t.Cleanup(func() { Delete(t, exchanges, queues) })
}

// Delete deletes the given queues and exchanges from the broker now. Errors
// are logged, not fatal, so that a leaked name shows in the test's log.
func Delete(t testing.TB, exchanges, queues []string) {
	t.Helper()
	u := os.Getenv("OMQS_TEST_AMQP_URL")
	if u == "" {
		u = DefaultURL
	}
	c, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Logf("brokertest: cleanup could not connect: %v", err)
		return
	}
	defer c.Close()
	del := func(what, name string, f func(*amqp.Channel) error) {
		ch, err := c.Channel()
		if err != nil {
			t.Logf("brokertest: delete %s %s: %v", what, name, err)
			return
		}
		if err := f(ch); err != nil {
			t.Logf("brokertest: delete %s %s: %v", what, name, err)
		}
		ch.Close()
	}
	for _, q := range queues {
		del("queue", q, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(q, false, false, false)
			return err
		})
	}
	for _, x := range exchanges {
		del("exchange", x, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) })
	}
}

// Channel opens a raw amqp091 channel on its own connection, closed when the
// test ends.
func Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	c, err := amqp.DialConfig(URL(t), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("brokertest: dial: %v", err)
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		t.Fatalf("brokertest: channel: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return ch
}

// Rabbitmqctl runs rabbitmqctl with args and returns its combined output. It
// fails the test if the command fails. Only tests in the serial fault
// packages may use it.
func Rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// legacyLock is the exclusive queue whose holder may use the original's
// shared names (see LockLegacyNames).
const legacyLock = "omqs.test.lock.legacy-names"

// LockLegacyNames waits until this test alone, among the tests of every
// package run against this broker, uses the fixed names of the original
// OMQS ("omqs.queue.event", "omqs.queue.log", "omqs.default.…"), and keeps
// them until the test ends. A test that declares, consumes from or deletes
// one of them calls it first, so that go test running packages side by side
// cannot have two such tests take each other's messages or delete a queue
// under another. The lock is an exclusive queue: the broker releases it when
// the holder's connection closes, even if the test process was killed.
func LockLegacyNames(t testing.TB) {
	t.Helper()
	c, err := amqp.DialConfig(URL(t), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("brokertest: lock %s: %v", legacyLock, err)
	}
	t.Cleanup(func() { c.Close() })
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ch, err := c.Channel()
		if err != nil {
			t.Fatalf("brokertest: lock %s: %v", legacyLock, err)
		}
		_, err = ch.QueueDeclare(legacyLock, false, true, true, false, nil)
		if err == nil {
			return // the channel stays open with the connection
		}
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.ResourceLocked {
			t.Fatalf("brokertest: lock %s: %v", legacyLock, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("brokertest: another test has held %s for 5 minutes", legacyLock)
		}
		<-tick.C
	}
}
