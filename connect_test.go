package omqs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/transport"
)

// refusedURL returns an AMQP URL (with a password) whose port refuses
// connections: a listener that was opened and closed again.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "amqp://guest:s3cret@" + addr + "/"
}

// TestConnectError: the one mapping of connect errors, for publishers and
// consumers alike.
func TestConnectError(t *testing.T) {
	refused := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'durable'"}
	dialErr := &transport.DialError{Endpoint: "amqp://127.0.0.1:1/", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want []error // every one must match with errors.Is
		not  []error // none may match
	}{
		{"dial error", dialErr, []error{ErrConnection}, nil},
		{"gave up", &reconnect.GiveUpError{Attempts: 3, Last: dialErr}, []error{ErrConnection}, nil},
		{"deadline with the last error", fmt.Errorf("%w; last attempt: %w", context.DeadlineExceeded, dialErr),
			[]error{ErrConnection, context.DeadlineExceeded}, nil},
		{"cancelled", context.Canceled, []error{ErrConnection, context.Canceled}, nil},
		{"declaration refused", &reconnect.PermanentError{Err: fmt.Errorf("%w: declare queue: %w", ErrInvalidQueue, refused)},
			[]error{ErrInvalidQueue}, []error{ErrConnection}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectError("SyncConsumer", tc.err)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("%v: want it to match %v", err, w)
				}
			}
			for _, n := range tc.not {
				if errors.Is(err, n) {
					t.Errorf("%v: want it not to match %v", err, n)
				}
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
			if !strings.Contains(err.Error(), "SyncConsumer") {
				t.Errorf("%v does not name the consumer", err)
			}
		})
	}
}

// TestConnectContextEnded: when the context ends while the broker refuses
// connections, publishers and consumers give the same error: it wraps
// ErrConnection and the context's error, and says why the last attempt
// failed (not only "context deadline exceeded"), without the password.
func TestConnectContextEnded(t *testing.T) {
	t.Parallel()
	url := refusedURL(t)
	l, _ := consumerLogger(t)
	opts := []Option{WithConfig(DefaultConfig()), WithURL(url), WithLogger(l), WithReconnect(20*time.Millisecond, 0)}
	check := func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, ErrConnection) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want ErrConnection and context.DeadlineExceeded", err)
		}
		// The last attempt was refused, or (on a slow machine) cut short by
		// the deadline; either way its dial error is in the error.
		var de *transport.DialError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "; last attempt: dial ") {
			t.Errorf("err = %v, want the last attempt's dial error in it", err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("err = %v shows the password", err)
		}
	}
	type publisher interface {
		Start(ctx context.Context) error
		Stop(ctx context.Context) error
	}
	for _, tc := range []struct {
		name  string
		build func(...Option) (publisher, error)
	}{
		{"SyncPublisher", func(o ...Option) (publisher, error) { return NewSyncPublisher(o...) }},
		{"AsyncPublisher", func(o ...Option) (publisher, error) { return NewAsyncPublisher(o...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.build(opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			check(t, p.Start(ctx))
			if err := p.Stop(context.Background()); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})
	}
	t.Run("Manager", func(t *testing.T) {
		// Issue 11, item 12: Start with the broker down says why.
		m, err := NewManager(append(opts, WithSpoolDir(t.TempDir()))...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		check(t, m.Start(ctx))
		if err := m.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	t.Run("consumer", func(t *testing.T) {
		// Run's own context ending is a normal end (Run returns nil), so
		// the consumer's connect path is checked below Run.
		c, err := NewSyncConsumer(opts...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err = c.connect(ctx, true)
		check(t, connectError(c.who, err))
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
}

// TestConsumerRunGivesUpWithLastError: a consumer whose broker refuses
// connections for RECONNECT_TIMES attempts returns ErrConnection from Run,
// with the last dial error in it.
func TestConsumerRunGivesUpWithLastError(t *testing.T) {
	t.Parallel()
	l, _ := consumerLogger(t)
	c, err := NewSyncConsumer(WithConfig(DefaultConfig()), WithURL(refusedURL(t)), WithLogger(l), WithReconnect(10*time.Millisecond, 3))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(testCtx(t, 15*time.Second))
	var ge *reconnect.GiveUpError
	if !errors.Is(err, ErrConnection) || !errors.As(err, &ge) || ge.Attempts != 3 || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Run = %v, want ErrConnection after 3 refused attempts", err)
	}
}
