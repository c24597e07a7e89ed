package omqs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// TestUnknownKeySuggestsTheClosest: a misspelt key's warning names the key
// it most likely meant; a key like no other gets no suggestion.
func TestUnknownKeySuggestsTheClosest(t *testing.T) {
	c := cfgMustParse(t, "[Global]\nRECONECT_TIMES=3\nBOGUS=1\n[EventConsumer]\nPREFECH=4\n")
	want := []string{
		"unknown key [Global] RECONECT_TIMES (ignored); did you mean RECONNECT_TIMES?",
		"unknown key [Global] BOGUS (ignored)",
		"unknown key [EventConsumer] PREFECH (ignored); did you mean PREFETCH?",
	}
	for _, w := range want {
		found := false
		for _, got := range c.Warnings {
			found = found || strings.HasSuffix(got, w)
		}
		if !found {
			t.Errorf("no warning ending %q in %q", w, c.Warnings)
		}
	}
}

// TestConstructorsLogConfigWarnings: the warnings of the configuration a
// Manager, a publisher or a consumer is built from reach its log once.
func TestConstructorsLogConfigWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "OMQS.cfg")
	if err := os.WriteFile(path, []byte("[Global]\nMQURL=memory://warn\nRECONECT_TIMES=3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		build func(opts ...Option) (interface {
			Stop(ctx context.Context) error
		}, error)
	}{
		{"NewManager", func(o ...Option) (interface {
			Stop(ctx context.Context) error
		}, error) {
			return NewManager(o...)
		}},
		{"NewAsyncPublisher", func(o ...Option) (interface {
			Stop(ctx context.Context) error
		}, error) {
			return NewAsyncPublisher(o...)
		}},
		{"NewEventMsgConsumer", func(o ...Option) (interface {
			Stop(ctx context.Context) error
		}, error) {
			return NewEventMsgConsumer(o...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf lockedbuf.Buffer
			v, err := c.build(WithConfigFile(path), WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Stop(testCtx(t, 10*time.Second))
			if n := strings.Count(buf.String(), "did you mean RECONNECT_TIMES?"); n != 1 {
				t.Errorf("the warning is logged %d times, want once:\n%s", n, buf.String())
			}
		})
	}
}

// TestURLFromEnvironment: $OMQS_MQURL overrides MQURL of OMQS.cfg; WithURL
// overrides both; a Config built in code is left as it is.
func TestURLFromEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "OMQS.cfg")
	if err := os.WriteFile(path, []byte("[Global]\nMQURL=amqp://file-host/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OMQS_MQURL", "amqp://env-host/")
	url := func(opts ...Option) string {
		t.Helper()
		s, err := buildSettings("NewManager", opts)
		if err != nil {
			t.Fatal(err)
		}
		return s.cfg.Global.MQURL
	}
	if got := url(WithConfigFile(path)); got != "amqp://env-host/" {
		t.Errorf("file and environment: MQURL %q, want the environment's", got)
	}
	if got := url(WithConfigFile(path), WithURL("amqp://option-host/")); got != "amqp://option-host/" {
		t.Errorf("WithURL: MQURL %q, want the option's", got)
	}
	cfg := DefaultConfig()
	cfg.Global.MQURL = "amqp://code-host/"
	if got := url(WithConfig(cfg)); got != "amqp://code-host/" {
		t.Errorf("WithConfig: MQURL %q, want the Config's", got)
	}
	s, err := buildSettings("NewManager", []Option{WithConfigFile(path)})
	if err != nil {
		t.Fatal(err)
	}
	if o := s.cfg.Origin("Global", "MQURL"); o != "$OMQS_MQURL" {
		t.Errorf("Origin = %q, want $OMQS_MQURL", o)
	}

	t.Setenv("OMQS_MQURL", "nats://user:s3cret@host/")
	_, err = NewManager(WithConfigFile(path))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "$OMQS_MQURL") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a bad $OMQS_MQURL: %v", err)
	}
}
