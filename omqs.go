// Package omqs hands messages from a Go program to RabbitMQ without making the
// caller wait for the network, and receives them in worker programs with plain
// callbacks on keyed (topic) queues.
//
// # Quick start
//
// A Manager owns two background workers: one publishes log records to the topic
// exchange "omqs.exchange.log", the other publishes events to
// "omqs.exchange.event". A web handler calls SendInfo or SendEvent; the call
// copies the message into a bounded in-memory buffer and returns, and the
// workers deliver it.
//
//	m, err := omqs.NewManager(omqs.WithURL("amqp://guest:guest@localhost:5672/"))
//	if err != nil { ... }
//	if err := m.Start(ctx); err != nil { ... }
//	defer m.Stop(context.Background())
//	m.SendInfo("user 42 signed in")
//	m.SendEvent(`{"email":"someone@example.com"}`, "email_notification")
//
// The URL "memory://" runs everything on an in-process broker, so a program or
// a unit test works without RabbitMQ.
//
// # Publishing
//
// Send* methods never touch the network. They return ErrNotStarted before
// Start, ErrStopped once Stop has begun and ErrBufferFull when the buffer of
// their lane (logs or events) is full. The Send*Context variants instead wait
// for room until their context ends. Routing keys longer than 255 bytes and
// text that is not valid UTF-8 are refused with ErrInvalidMessage.
//
// Logs go out through a SyncPublisher (one confirmed publish at a time); events
// through an AsyncPublisher (pipelined publishes, confirms tracked in the
// background). Both run in publisher-confirm mode, publish persistent messages
// with a content type, a timestamp, a unique message id and an app id, and
// events are published mandatory so an unroutable event is reported instead of
// vanishing.
//
// # Delivery guarantees
//
// Every message a Send* call accepted is, at least once, either confirmed by the
// broker or written to the spool file of its lane (FOLDER/backup.log and
// FOLDER/backup.evt) from which it is replayed when the broker is reachable
// again. A message can be delivered more than once (after a reconnect the
// publisher republishes everything the broker had not confirmed); consumers can
// drop duplicates by Delivery.MessageID. An event that no queue is bound to is
// returned by the broker: it is counted in Stats.Returned and reported to the
// logger and to the WithReturnHandler callback.
//
// # Shutdown
//
// Manager.Stop refuses new sends, drains every accepted message, waits for the
// broker's confirms, calls each worker's WorkerWillStop once and closes its
// connections. If its context ends first it spools what was not confirmed and
// returns an error saying how many messages that was. Consumers' Stop cancels
// the subscription and waits for the callbacks in flight.
//
// # Consumers
//
// SyncConsumer handles one delivery at a time, AsyncConsumer several at once.
// LogMsgConsumer and EventMsgConsumer are consumers preset with the names of the
// log and event paths. A callback's nil result acknowledges the delivery, an
// error rejects it (dead-lettered if the queue has a dead-letter exchange), an
// error made with Requeue puts it back on the queue, and a panic is recovered,
// logged and rejected.
//
// # Configuration
//
// Settings come from options passed in code, then from an OMQS.cfg file, then
// from built-in defaults, in that order of priority. See Config and LoadConfig.
//
// # Logging
//
// LogManager builds a *slog.Logger whose output follows the [Log] section of
// OMQS.cfg: a Python logging format string, stream or file output, rotation by
// size or time.
package omqs

import (
	"errors"
	"time"
)

// Names of the exchanges, queues and keys the built-in workers and consumers use.
const (
	LogExchange     = "omqs.exchange.log"
	EventExchange   = "omqs.exchange.event"
	LogQueue        = "omqs.queue.log"
	EventQueue      = "omqs.queue.event"
	DefaultLogKey   = "omqs.key.log"
	DefaultEventKey = "omqs.key.event"

	// Keys of the log lane, as SendFatal ... SendDebug use them.
	KeyFatal   = "fatal"
	KeyError   = "error"
	KeyWarning = "warning"
	KeyInfo    = "info"
	KeyDebug   = "debug"

	// Fallbacks of a consumer or publisher built without names.
	DefaultExchange   = "omqs.default.topicExchange"
	DefaultQueue      = "omqs.default.topicQueue"
	DefaultRoutingKey = "omqs.default.syncPublisher.key"

	// DefaultURL is the broker used when neither an option nor OMQS.cfg names one.
	DefaultURL = "amqp://guest:guest@localhost:5672/%2F"

	// MaxKeyLen is the longest routing key AMQP can carry, in bytes.
	MaxKeyLen = 255
)

// Errors returned by this package. Each is wrapped with detail; test with errors.Is.
var (
	// ErrInvalidPublisher: a publisher was used before it was started, or after it failed.
	ErrInvalidPublisher = errors.New("omqs: invalid publisher")
	// ErrInvalidQueue: a queue could not be declared, bound or consumed as configured.
	ErrInvalidQueue = errors.New("omqs: invalid queue")
	// ErrInvalidChannel: the AMQP channel closed or could not be opened.
	ErrInvalidChannel = errors.New("omqs: invalid channel")
	// ErrNotStarted: Send* or Publish was called before Start.
	ErrNotStarted = errors.New("omqs: not started")
	// ErrStopped: Send*, Publish or Run was called once Stop had begun.
	ErrStopped = errors.New("omqs: stopped")
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

// Message is what a worker receives from the Manager's buffer.
type Message struct {
	// Key is the routing key.
	Key string
	// Body is the message text.
	Body []byte
	// MessageID is unique per message; it survives republishing and spooling.
	MessageID string
	// Timestamp is when Send* accepted the message.
	Timestamp time.Time
	// Headers are AMQP headers to send with the message (may be nil).
	Headers map[string]any
}

// Delivery is a message received by a consumer.
type Delivery struct {
	Exchange    string
	RoutingKey  string
	Body        []byte
	ContentType string
	MessageID   string
	AppID       string
	Timestamp   time.Time
	Headers     map[string]any
	// Redelivered is true when the broker delivered this message before (to this
	// or another consumer) and it was not acknowledged.
	Redelivered bool
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
