package omqs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigSharedQueueType: [EventWorker] and [EventConsumer] that declare
// one queue with different QUEUE_TYPEs are refused with an error naming
// both, by Validate, LoadConfig and the constructors, instead of the
// Manager's Start (or the consumer's Run) failing with 406.
func TestConfigSharedQueueType(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EventConsumer.QueueType = "quorum"
	err := cfg.Validate()
	want := `[EventWorker] QUEUE_TYPE is classic and [EventConsumer] QUEUE_TYPE is quorum for the same queue "omqs.queue.event"`
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Validate: %v\nwant ErrInvalidConfig with %q", err, want)
	}
	if _, err := NewManager(WithConfig(cfg), WithURL("memory://shared-queue-type")); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		t.Errorf("NewManager: %v", err)
	}
	if _, err := NewEventMsgConsumer(WithConfig(cfg), WithURL("memory://shared-queue-type")); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		t.Errorf("NewEventMsgConsumer: %v", err)
	}

	_, err = parseConfig("shared.cfg", []byte("[EventWorker]\nQUEUE_TYPE = quorum\n"))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "shared.cfg: [EventWorker] QUEUE_TYPE is quorum and [EventConsumer] QUEUE_TYPE is classic") {
		t.Errorf("parseConfig: %v", err)
	}

	for _, ok := range []string{
		"[EventWorker]\nQUEUE_TYPE = quorum\n[EventConsumer]\nQUEUE_TYPE = Quorum\n",
		"[EventWorker]\nQUEUE_TYPE = quorum\nQUEUE = app.events\n",
		"[EventConsumer]\nQUEUE_TYPE = quorum\nQUEUE = app.events.mail\n",
		"[DEFAULT]\nQUEUE_TYPE = quorum\n",
	} {
		c, err := parseConfig("ok.cfg", []byte(ok))
		if err != nil {
			t.Errorf("%q: %v", ok, err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: Validate: %v", ok, err)
		}
	}
}

// TestConfigCompatWarnings: settings that the Python original (or another
// section of the file) would refuse on the same names are listed in
// Config.Warnings with the consequence; others are not.
func TestConfigCompatWarnings(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string // one substring per warning, in order
	}{
		{"defaults", "", nil},
		{"quorum event queue", "[DEFAULT]\nQUEUE_TYPE = quorum\n", []string{
			`[EventWorker] declares the queue "omqs.queue.event" with QUEUE_TYPE=quorum; the Python original declares it classic, durable=true`,
			`[LogConsumer] declares the queue "omqs.queue.log" with QUEUE_TYPE=quorum; the Python original declares it classic, durable=false`,
			`[EventConsumer] declares the queue "omqs.queue.event" with QUEUE_TYPE=quorum`,
		}},
		{"durable log queue", "[LogConsumer]\nQUEUE_DURABLE = yes\n", []string{
			`[LogConsumer] declares the queue "omqs.queue.log" with durable=true; the Python original declares it classic, durable=false, without arguments, so a Python service that uses it cannot start while it exists`,
		}},
		{"dead-letter exchange", "[EventConsumer]\nDEAD_LETTER_EXCHANGE = app.dlx\n[EventWorker]\nDEAD_LETTER_EXCHANGE = app.dlx\n", []string{
			`[EventWorker] declares the queue "omqs.queue.event" with DEAD_LETTER_EXCHANGE=app.dlx; the Python original declares it classic`,
			`[EventConsumer] declares the queue "omqs.queue.event" with DEAD_LETTER_EXCHANGE=app.dlx; the Python original declares it classic`,
		}},
		{"queue limits", "[LogConsumer]\nMESSAGE_TTL = 60\nMAX_LENGTH = 1000\n", []string{
			`[LogConsumer] declares the queue "omqs.queue.log" with MESSAGE_TTL=1m0s, MAX_LENGTH=1000; the Python original declares it classic, durable=false, without arguments`,
		}},
		{"non-durable event queue", "[EventWorker]\nQUEUE_DURABLE = no\n", []string{
			`[EventWorker] declares the queue "omqs.queue.event" with durable=false`,
			`[EventWorker] declares the queue "omqs.queue.event" durable=false and [EventConsumer] durable=true`,
		}},
		{"log exchange", "[LogWorker]\nEXCHANGE_DURABLE = no\n", []string{
			`[LogWorker] declares the exchange "omqs.exchange.log" as topic, durable=false; the Python original declares it topic and durable`,
		}},
		{"own names", "[LogConsumer]\nQUEUE = app.logs\nQUEUE_DURABLE = yes\nDEAD_LETTER_EXCHANGE = app.dlx\n" +
			"[EventConsumer]\nQUEUE = app.events\nQUEUE_TYPE = quorum\n", nil},
		{"event consumer asked for a non-durable queue", "[EventConsumer]\nQUEUE_DURABLE = no\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfgMustParse(t, tt.file)
			if len(c.Warnings) != len(tt.want) {
				t.Fatalf("warnings:\n%s\nwant %d", strings.Join(c.Warnings, "\n"), len(tt.want))
			}
			for i, w := range tt.want {
				got := c.Warnings[i]
				if !strings.HasPrefix(got, "test.cfg: ") || !strings.Contains(got, w) || !strings.HasSuffix(got, "(406 PRECONDITION_FAILED)") {
					t.Errorf("warning %d:\n%s\nwant it to contain\n%s", i, got, w)
				}
			}
		})
	}
	// The original's own file loads without any.
	c, err := LoadConfig(filepath.Join("testdata", "config", "original.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w, "PRECONDITION_FAILED") {
			t.Errorf("original.cfg: %s", w)
		}
	}
}
