// Package faulttest holds tests that break the broker on purpose (they close
// every connection of the shared RabbitMQ, stop and start its application
// and raise its memory alarm with rabbitmqctl), and the helpers they share.
// Such tests would break every other test running against the same broker,
// so they run only when asked for, one package at a time:
//
//	OMQS_FAULT_TESTS=1 go test -p 1 ./internal/faulttest/
//
// The fault matrix (TestFaultMatrix) prints its table with:
//
//	OMQS_FAULT_TESTS=1 go test -run TestFaultMatrix -v -p 1 ./internal/faulttest/
//
// Environment:
//
//	OMQS_FAULT_TESTS=1        run the tests at all
//	OMQS_FAULT_MESSAGES=N     messages per matrix case (default 50000)
//	OMQS_FAULT_TABLE=path     also write the matrix's Markdown table to path
//	OMQS_FAULT_OWN_ONLY=1     connection kills close only the tests' own
//	                          connections (by connection name), for runs
//	                          next to other tests that share the broker; the
//	                          default closes every connection
//	OMQS_CLUSTER_TESTS=1      also run TestClusterFailover, which starts a
//	                          three-node cluster of its own
//	                          (internal/clustertest) beside the broker
//	OMQS_CLUSTER_MESSAGES=N   events of the cluster test (default 50000)
//	OMQS_CLUSTER_TABLE=path   also write the cluster test's table to path
//
// Every helper that breaks the broker registers its own undo with t.Cleanup
// when it breaks it (so the undo runs before the cleanups of what the test
// built earlier), and Restore registers a final one that puts the broker back
// in its normal state and waits until it accepts a login.
package faulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// NormalWatermark is the broker's memory high watermark outside the memory
// alarm (RabbitMQ's default, which the CI broker uses).
const NormalWatermark = "0.4"

// AlarmWatermark is a watermark low enough that any running broker is above
// it: setting it raises the memory alarm at once.
const AlarmWatermark = "0.000001"

// Enabled reports whether OMQS_FAULT_TESTS=1 is set.
func Enabled() bool { return os.Getenv("OMQS_FAULT_TESTS") == "1" }

// OwnOnly reports whether OMQS_FAULT_OWN_ONLY=1 is set: connection kills then
// close only the connections whose name has the prefix the test gives.
func OwnOnly() bool { return os.Getenv("OMQS_FAULT_OWN_ONLY") == "1" }

// Require skips t unless fault tests were asked for, saying how to run them.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skip("fault test: it closes every connection of the broker, restarts it and raises its memory alarm; run it alone with OMQS_FAULT_TESTS=1 go test -p 1 ./internal/faulttest/")
	}
}

// Ctl runs rabbitmqctl with args and returns its combined output.
func Ctl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ctl is Ctl with a two-minute limit that fails t when the command fails.
func ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := Ctl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// CloseAllConnections makes the broker close every client connection, giving
// reason to the clients.
func CloseAllConnections(t testing.TB, reason string) {
	t.Helper()
	ctl(t, "-q", "close_all_connections", reason)
}

// Connection is a client connection the broker lists.
type Connection struct {
	PID  string // the connection's Erlang process id, as close_connection takes it
	Name string // the connection_name client property ("" when not given)
}

var connNameRe = regexp.MustCompile(`\{"connection_name","((?:[^"\\]|\\.)*)"\}`)

// Connections lists the broker's client connections.
func Connections(t testing.TB) []Connection {
	t.Helper()
	out := ctl(t, "-q", "list_connections", "--no-table-headers", "pid", "client_properties")
	var cs []Connection
	for _, line := range strings.Split(out, "\n") {
		pid, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok || !strings.HasPrefix(pid, "<") {
			continue
		}
		c := Connection{PID: pid}
		if m := connNameRe.FindStringSubmatch(props); m != nil {
			c.Name = m[1]
		}
		cs = append(cs, c)
	}
	return cs
}

// CloseConnections makes the broker close client connections, giving reason
// to the clients: every connection (close_all_connections), or, when OwnOnly,
// the connections whose name starts with prefix. It returns how many it
// closed, or -1 when it closed every connection (the broker does not say).
func CloseConnections(t testing.TB, reason, prefix string) int {
	t.Helper()
	if !OwnOnly() {
		CloseAllConnections(t, reason)
		return -1
	}
	var (
		wg sync.WaitGroup
		n  atomic.Int32
	)
	for _, c := range Connections(t) {
		if prefix == "" || !strings.HasPrefix(c.Name, prefix) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// A connection that closed on its own meanwhile is not an error.
			if _, err := Ctl(ctx, "-q", "close_connection", c.PID, reason); err == nil {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// undo runs f once, either when the caller calls the returned function or
// when the test ends, whichever comes first.
func undo(t testing.TB, f func() error) func() {
	var once sync.Once
	run := func() {
		once.Do(func() {
			if err := f(); err != nil {
				t.Errorf("faulttest: restoring the broker: %v", err)
			}
		})
	}
	t.Cleanup(run)
	return run
}

// StopApp stops the broker's application (the node keeps running; clients
// see their connections closed and new connections refused). It returns a
// function that starts it again and waits until it accepts a login; that
// function also runs when the test ends, if it was not called.
func StopApp(t testing.TB) (start func()) {
	t.Helper()
	url := brokertest.URL(t)
	start = undo(t, func() error { return startApp(url) })
	ctl(t, "-q", "stop_app")
	return start
}

func startApp(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := Ctl(ctx, "-q", "start_app"); err != nil {
		return err
	}
	return WaitReady(ctx, url)
}

// RaiseMemoryAlarm sets the memory high watermark so low that the broker
// raises its memory alarm and blocks every publishing connection. It returns
// a function that restores the normal watermark; that function also runs when
// the test ends, if it was not called.
func RaiseMemoryAlarm(t testing.TB) (clear func()) {
	t.Helper()
	clear = undo(t, clearMemoryAlarm)
	ctl(t, "-q", "set_vm_memory_high_watermark", AlarmWatermark)
	return clear
}

func clearMemoryAlarm() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := Ctl(ctx, "-q", "set_vm_memory_high_watermark", NormalWatermark)
	return err
}

// Restore registers a cleanup, to run when t ends (after the cleanups
// registered later), that clears the memory alarm, starts the broker's
// application and waits until the broker accepts a login, whatever the test
// did or how it ended.
func Restore(t testing.TB) {
	t.Helper()
	url := brokertest.URL(t)
	t.Cleanup(func() {
		var errs []error
		if err := clearMemoryAlarm(); err != nil {
			errs = append(errs, err)
		}
		if err := startApp(url); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("faulttest: restoring the broker: %v", err)
		}
	})
}

// WaitReady waits until the broker at url accepts an AMQP login and opens a
// channel, or ctx ends.
func WaitReady(ctx context.Context, url string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err == nil {
			ch, cerr := c.Channel()
			if cerr == nil {
				ch.Close()
			}
			c.Close()
			if cerr == nil {
				return nil
			}
			err = cerr
		}
		last = err
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("the broker did not accept a login: %w (last: %v)", ctx.Err(), last)
		}
	}
}

// WaitFor polls cond every millisecond until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Poll polls cond every millisecond until it holds (nil) or timeout passes
// (an error).
func Poll(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		<-tick.C
	}
	return nil
}
