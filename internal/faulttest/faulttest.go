// Package faulttest holds tests that break the broker on purpose (they close
// every connection of the shared RabbitMQ with rabbitmqctl), and the helpers
// they share. Such tests would break every other test running against the
// same broker, so they run only when asked for, one package at a time:
//
//	OMQS_FAULT_TESTS=1 go test -p 1 ./internal/faulttest/
package faulttest

import (
	"os"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// Enabled reports whether OMQS_FAULT_TESTS=1 is set.
func Enabled() bool { return os.Getenv("OMQS_FAULT_TESTS") == "1" }

// Require skips t unless fault tests were asked for, saying how to run them.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skip("fault test: it closes every connection of the broker; run it alone with OMQS_FAULT_TESTS=1 go test -p 1 ./internal/faulttest/")
	}
}

// CloseAllConnections makes the broker close every client connection, giving
// reason to the clients.
func CloseAllConnections(t testing.TB, reason string) {
	t.Helper()
	brokertest.Rabbitmqctl(t, "close_all_connections", reason)
}

// WaitFor polls cond every millisecond until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
