package omqs

import (
	"errors"
	"strings"
	"time"

	"github.com/omqs-go/omqs/internal/transport"
)

// Errors returned by this package. Each is wrapped with detail; test with
// errors.Is. The text of an error returned by a type of the package reads
// "omqs: <Type>: <sentinel>: <detail>", as in
//
//	omqs: SyncPublisher: already running: Start was called twice
//	omqs: NewSyncPublisher: invalid configuration: WithSection("LogConsumer"): ...
var (
	// ErrInvalidPublisher is returned by nothing in this package. It stays
	// for code ported from the Python library (InvalidPublisherError): a
	// publisher used before Start returns ErrNotStarted, after Stop
	// ErrStopped, and Start called twice ErrRunning.
	ErrInvalidPublisher = errors.New("omqs: invalid publisher")
	// ErrInvalidQueue: a queue could not be declared, bound or consumed as configured.
	ErrInvalidQueue = errors.New("omqs: invalid queue")
	// ErrInvalidChannel: the AMQP channel closed or could not be opened.
	ErrInvalidChannel = errors.New("omqs: invalid channel")
	// ErrNotStarted: Send* or Publish was called before Start.
	ErrNotStarted = errors.New("omqs: not started")
	// ErrStopped: Send*, Publish or Run was called once Stop had begun (or,
	// for a consumer's Run, after Run had returned).
	ErrStopped = errors.New("omqs: stopped")
	// ErrRunning: Start was called again on a Manager, a SyncPublisher or an
	// AsyncPublisher that had been started and not stopped, or a consumer's
	// Run was called while it was running.
	ErrRunning = errors.New("omqs: already running")
	// ErrBufferFull: the lane's buffer holds as many messages as it may.
	ErrBufferFull = errors.New("omqs: buffer full")
	// ErrInvalidConfig: an option, a configuration file or a URL is not valid.
	ErrInvalidConfig = errors.New("omqs: invalid configuration")
	// ErrInvalidMessage: a message AMQP cannot carry (key too long, text not UTF-8).
	ErrInvalidMessage = errors.New("omqs: invalid message")
	// ErrConnection: the broker could not be reached or refused the connection.
	ErrConnection = errors.New("omqs: connection failed")
	// ErrNacked: the broker refused (nacked) a published message.
	ErrNacked = errors.New("omqs: message nacked by the broker")
	// ErrSpooled: a message could not be delivered and was written to the spool file.
	ErrSpooled = errors.New("omqs: message spooled")
	// ErrNotConfirmed: Stop's context ended before the broker confirmed every message.
	ErrNotConfirmed = errors.New("omqs: messages not confirmed")
)

// typedError is an error returned by one of the package's types or
// constructors. Its text is "omqs: <who>: " and then err's text without its
// own leading "omqs: " (every sentinel has one), so that texts read
// "omqs: <Type>: <sentinel>: <detail>". errors.Is and errors.As see err and
// what it wraps.
type typedError struct {
	who string // a type ("SyncPublisher", `SyncConsumer "name"`) or a constructor ("NewManager")
	err error
}

func (e *typedError) Error() string {
	return "omqs: " + e.who + ": " + strings.TrimPrefix(e.err.Error(), "omqs: ")
}

func (e *typedError) Unwrap() error { return e.err }

// errorOf attributes err to who (see typedError). It returns nil for nil.
func errorOf(who string, err error) error {
	if err == nil {
		return nil
	}
	return &typedError{who: who, err: err}
}

// Requeue wraps err so that a consumer callback returning it puts the delivery
// back on its queue instead of rejecting it. Requeue(nil) requeues too.
func Requeue(err error) error {
	return &requeueError{err: err}
}

type requeueError struct{ err error }

func (e *requeueError) Error() string {
	if e.err == nil {
		return "omqs: requeue"
	}
	return "omqs: requeue: " + e.err.Error()
}

func (e *requeueError) Unwrap() error { return e.err }

// IsRequeue reports whether err asks for the delivery to be requeued.
func IsRequeue(err error) bool {
	var r *requeueError
	return errors.As(err, &r)
}

// RetryAfter wraps err so that a consumer callback returning it has its
// delivery handed to the callback again after a delay: at least d the first
// time, and twice the previous delay for each further retry of the same
// message (d, 2d, 4d...), each rounded up to one of the retry queues' fixed
// delays (10ms, 20ms, 50ms, 100ms, 200ms, 500ms, 1s, 2s, 5s, ... up to 24h,
// the longest). Retries count against MAX_REDELIVERIES together with
// Requeue: past it the delivery is rejected (dead-lettered where the queue
// has a dead-letter exchange). See the consumer types' documentation for how
// it works, and what it means for ordering and duplicates. With
// WithNoAck(true) it is only logged, as any error.
func RetryAfter(err error, d time.Duration) error {
	return &retryError{err: err, delay: d}
}

type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string {
	if e.err == nil {
		return "omqs: retry after " + e.delay.String()
	}
	return "omqs: retry after " + e.delay.String() + ": " + e.err.Error()
}

func (e *retryError) Unwrap() error { return e.err }

// retryOf returns the RetryAfter in err's chain, or nil.
func retryOf(err error) *retryError {
	var r *retryError
	if errors.As(err, &r) {
		return r
	}
	return nil
}

// redactedError hides the passwords of URLs in an error's text while
// keeping errors.Is and errors.As working on what it wraps.
type redactedError struct{ err error }

func (e redactedError) Error() string { return transport.Redact(e.err.Error()) }

func (e redactedError) Unwrap() error { return e.err }

// redactError wraps err in a redactedError when its text holds a URL.
func redactError(err error) error {
	if err == nil || !strings.Contains(err.Error(), "://") {
		return err
	}
	if _, ok := err.(redactedError); ok {
		return err
	}
	return redactedError{err: err}
}
