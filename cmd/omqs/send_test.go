package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

func TestSend(t *testing.T) {
	s := brokerSetup(t)
	ch := brokertest.Channel(t)
	logQ := brokertest.Unique("omqs.test.q")
	brokertest.Cleanup(t, nil, []string{logQ})
	declareBound(t, ch, logQ, s.logX, "#")

	// One event with the default key, to the [EventWorker] queue.
	r := runOmqs(t, runOpts{}, "--config", s.cfg, "send", "--header", "tenant=acme", "--header", "trace=a=b", "hello")
	wantCode(t, r, 0)
	wantContains(t, "send", r.stdout, fmt.Sprintf("1 message confirmed (exchange %q, key %q)", s.eventX, s.eventKey))
	depth(t, ch, s.eventQ, 1)
	d := get(t, ch, s.eventQ)
	if string(d.Body) != "hello" || d.RoutingKey != s.eventKey || d.Headers["tenant"] != "acme" || d.Headers["trace"] != "a=b" || d.MessageId == "" {
		t.Errorf("event: body %q key %q headers %v id %q", d.Body, d.RoutingKey, d.Headers, d.MessageId)
	}

	// A log record, through $OMQS_CONFIG.
	r = runOmqs(t, runOpts{env: []string{"OMQS_CONFIG=" + s.cfg}}, "send", "--log", "error", "disk full")
	wantCode(t, r, 0)
	depth(t, ch, logQ, 1)
	if d := get(t, ch, logQ); string(d.Body) != "disk full" || d.RoutingKey != "error" {
		t.Errorf("log: body %q key %q", d.Body, d.RoutingKey)
	}

	// Standard input: one message per line, empty lines skipped.
	const n = 2000
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "line %d\r\n", i)
		if i%500 == 0 {
			in.WriteString("\n")
		}
	}
	r = runOmqs(t, runOpts{stdin: in.String()}, "--config", s.cfg, "send", "--event", s.eventKey, "-")
	wantCode(t, r, 0)
	wantContains(t, "send", r.stdout, fmt.Sprintf("%d messages confirmed", n))
	if r.stderr != "" {
		t.Errorf("standard error is not a terminal, yet: %q", r.stderr)
	}
	depth(t, ch, s.eventQ, n)
	if d := get(t, ch, s.eventQ); string(d.Body) != "line 0" {
		t.Errorf("first line: %q", d.Body)
	}
}

func TestSendFailures(t *testing.T) {
	s := brokerSetup(t)

	// An event no queue is bound to receive comes back: not delivered.
	r := runOmqs(t, runOpts{}, "--config", s.cfg, "send", "--event", "nobody.listens", "hello")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, `1 event(s) returned as unroutable: no queue is bound to key "nobody.listens"`)

	// Wrong credentials, a closed port, a URL that is not one.
	bad := strings.Replace(s.url, "guest:guest@", "guest:wrongpass@", 1)
	if bad == s.url {
		t.Skip("the test broker's URL has no guest:guest credentials to spoil")
	}
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "--url", bad, "send", "hello")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs send: connect:")
	wantNotContains(t, "output", r.stdout+r.stderr, "wrongpass")

	r = runOmqs(t, runOpts{}, "--config", s.cfg, "--url", "amqp://guest:guest@127.0.0.1:1/", "send", "--timeout", "1s", "hello")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs send: connect:")

	r = runOmqs(t, runOpts{}, "--config", s.cfg, "--url", "amqp//nope", "send", "hello")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs send: --url:")

	// A key AMQP cannot carry is refused, and the exit status says so.
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "send", "--event", strings.Repeat("k", 256), "hello")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "refused before sending", "longer than 255")
}

// SIGINT ends send even while standard input has nothing more to read; it
// reports what was confirmed and exits with status 130.
func TestSendInterrupted(t *testing.T) {
	s := brokerSetup(t)
	ch := brokertest.Channel(t)
	wantCode(t, runOmqs(t, runOpts{}, "--config", s.cfg, "ping"), 0) // declares the queue
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := newCmd(t, ctx, runOpts{}, "--config", s.cfg, "send", "-")
	cmd.Stdin = nil
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	for i := range 10 {
		fmt.Fprintf(stdin, "message %d\n", i)
	}
	depth(t, ch, s.eventQ, 10)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit status %d, want 130; stderr:\n%s", code, stderr.String())
	}
	wantContains(t, "standard error", stderr.String(), "omqs send: interrupted: 10 message(s) sent, 10 confirmed")
}
