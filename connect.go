package omqs

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/transport"
)

// connectChannel is how publishers and consumers connect: it dials through
// d (every endpoint in turn, every RECONNECT_INTERVAL, up to RECONNECT_TIMES)
// until a connection is open, a channel opened on it and setup on that
// channel succeeded (declarations, confirm mode or prefetch, the
// subscription). A setup step the broker refuses for good (a precondition,
// access or not-found error, such as a queue that exists with other
// settings) is not retried when failFast is set.
//
// Map its error with connectError, unless the caller's own context ending
// is a normal end for it.
func connectChannel(ctx context.Context, d *reconnect.Dialer, failFast bool, setup func(conn transport.Conn, ch transport.Channel) error) error {
	_, err := d.Connect(ctx, func(ctx context.Context, conn transport.Conn) error {
		// Opening the channel and setting it up wait for the broker's
		// answers, and amqp091's calls take no context: when ctx ends, close
		// the connection, so that a call the broker never answers returns.
		stopWatch := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now()) })
		err := setupChannel(conn, setup)
		if !stopWatch() {
			// The connection was closed under the setup: say so rather than
			// report the closed channel or connection that follows from it.
			return fmt.Errorf("%w (%v)", errSetupInterrupted, err)
		}
		return err
	}, failFast)
	return err
}

// errSetupInterrupted: the context ended while the broker had not answered
// the opening of the channel or a setup step (declarations, confirm mode or
// prefetch, the subscription).
var errSetupInterrupted = errors.New("channel setup: no answer from the broker before the context ended")

// setupChannel opens a channel on conn and runs setup on it.
func setupChannel(conn transport.Conn, setup func(conn transport.Conn, ch transport.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("%w: open channel: %w", ErrInvalidChannel, err)
	}
	return permanentIfRefused(setup(conn, ch))
}

// connectError maps an error of connectChannel for who (the type and name
// of a publisher or a consumer). The broker being out of reach wraps
// ErrConnection: a dial error (wrong credentials, refused or failed TCP
// connection, TLS), RECONNECT_TIMES failed attempts, and the context ending
// before a connection was set up. In the last case the error wraps the
// context's error too (errors.Is(err, context.DeadlineExceeded)) and the
// last attempt's error, so that it says why the attempts failed. A setup
// error (a refused declaration) keeps its own sentinel, such as
// ErrInvalidQueue.
func connectError(who string, err error) error {
	var ge *reconnect.GiveUpError
	var de *transport.DialError
	if errors.As(err, &ge) || errors.As(err, &de) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errorOf(who, fmt.Errorf("%w: %w", ErrConnection, err))
	}
	return errorOf(who, err)
}

// permanentIfRefused marks an error the broker will give again when asked
// again, so that a first connection fails at once instead of retrying.
func permanentIfRefused(err error) error {
	if err != nil && isPreconditionOrAccess(err) {
		return &reconnect.PermanentError{Err: err}
	}
	return err
}

func isPreconditionOrAccess(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed, amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.NotAllowed, amqp.CommandInvalid:
			return true
		}
	}
	return false
}
