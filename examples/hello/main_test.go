package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omqs-go/omqs"
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

// TestRunSaysWhyItTimedOut: another consumer of the event queue takes some
// of the events; run gives up when its time is over, and says why.
func TestRunSaysWhyItTimedOut(t *testing.T) {
	const url = "memory://hello-competing-consumer"
	thief, err := omqs.NewEventMsgConsumer(omqs.WithURL(url), omqs.WithKeys(eventKey),
		omqs.WithLogger(slog.New(slog.DiscardHandler)),
		omqs.WithCallback(func(context.Context, omqs.Delivery) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- thief.Run(context.Background()) }()
	defer func() {
		if err := thief.Stop(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !thief.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("the competing consumer is not ready")
		}
		select {
		case err := <-done:
			t.Fatalf("the competing consumer stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}

	var out lockedbuf.Buffer
	start := time.Now()
	err = run(context.Background(), url, time.Second, &out)
	if err == nil {
		t.Fatalf("run succeeded with a competing consumer:\n%s", out.String())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("run took %v to give up after a 1s timeout", took)
	}
	for _, want := range []string{"of 2 events", "3 of 3 logs", "time ran out", "another consumer reading omqs.queue.event"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestRunRefusesABadURL(t *testing.T) {
	var out lockedbuf.Buffer
	if err := run(context.Background(), "nats://localhost", time.Second, &out); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("run with a bad URL: %v", err)
	}
}
