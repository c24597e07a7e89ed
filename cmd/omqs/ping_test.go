package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/omqs-go/omqs/internal/brokertest"
)

func TestPing(t *testing.T) {
	s := brokerSetup(t)
	r := runOmqs(t, runOpts{}, "--config", s.cfg, "ping")
	wantCode(t, r, 0)
	if !regexp.MustCompile(`^amqp://\S+: RabbitMQ \d+\.\d+\S*.*, connected in \S+, declared in \S+\n$`).MatchString(r.stdout) {
		t.Errorf("ping printed %q", r.stdout)
	}
	wantNotContains(t, "ping", r.stdout, ":guest@")
	// It declared the workers' topology.
	ch := brokertest.Channel(t)
	if _, err := ch.QueueDeclarePassive(s.eventQ, true, false, false, false, nil); err != nil {
		t.Errorf("the [EventWorker] queue was not declared: %v", err)
	}

	r = runOmqs(t, runOpts{}, "--url", "memory://", "ping")
	wantCode(t, r, 0)
	wantContains(t, "ping", r.stdout, "memory://: in-process broker, connected in")

	// Two URLs, one of which does not answer.
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "--url", s.url+",amqp://guest:guest@127.0.0.1:1/", "ping", "--timeout", "2s")
	wantCode(t, r, 1)
	wantContains(t, "ping", r.stdout, "RabbitMQ", "127.0.0.1:1/: connect:")
	wantContains(t, "standard error", r.stderr, "1 of 2 brokers did not answer")
}

func TestPingFailures(t *testing.T) {
	s := brokerSetup(t)
	bad := strings.Replace(s.url, "guest:guest@", "guest:wrongpass@", 1)
	tests := []struct {
		name, url, want string
	}{
		{"closed port", "amqp://guest:guest@127.0.0.1:1/", "connection refused"},
		{"not a URL", "amqps:/nope", "--url:"},
		{"unknown parameter", "amqp://guest:guest@127.0.0.1/?frobnicate=1", "frobnicate"},
	}
	if bad != s.url {
		tests = append(tests, struct{ name, url, want string }{"wrong password", bad, "403"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runOmqs(t, runOpts{}, "--config", s.cfg, "--url", tt.url, "ping", "--timeout", "5s")
			wantCode(t, r, 1)
			wantContains(t, "standard error", r.stderr, "omqs ping: ", tt.want)
			wantNotContains(t, "output", r.stdout+r.stderr, "wrongpass")
			if n := strings.Count(r.stderr, "\n"); n != 1 {
				t.Errorf("%d lines on standard error, want one:\n%s", n, r.stderr)
			}
		})
	}
	// A declaration the broker refuses: the exchange exists as a fanout.
	ch := brokertest.Channel(t)
	if err := ch.ExchangeDeclare(s.logX, "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r := runOmqs(t, runOpts{}, "--config", s.cfg, "ping")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "RabbitMQ", "declaring failed", "[LogWorker] exchange", "PRECONDITION_FAILED")
}
