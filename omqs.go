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
// a unit test works without RabbitMQ (see Testing without a broker).
//
// # Publishing
//
// Send* methods never touch the network. They return ErrNotStarted before
// Start, ErrStopped once Stop has begun and ErrBufferFull when the buffer of
// their lane (logs or events) is full. The Send*Context variants instead wait
// for room until their context ends. Routing keys longer than 255 bytes and
// text that is not valid UTF-8 are refused with ErrInvalidMessage.
// SendEventMessage takes a bytes body with a content type and headers and
// returns the message id; SendEventJSON sends a Go value as JSON.
//
// Each lane's worker publishes on one channel of its own, pipelined: the
// broker's confirms are tracked in the background, up to MAX_IN_FLIGHT
// messages at a time, and each lane's messages go out in the order sent.
// Both run in publisher-confirm mode and publish persistent messages with a
// timestamp and a unique message id (a content type and an app id when one
// is given). Events are published mandatory so an unroutable event is
// reported instead of vanishing, except those the event worker's own
// durable queue is bound to receive (see WithMandatory). WithLogWorker and WithEventWorker replace either built-in worker
// (LogMsgWorker, EventMsgWorker) with a MsgWorker of your own, which can
// embed the built-in one to keep its delivery.
//
// # Delivery guarantees
//
// Every message a Send* call accepted is, at least once, either confirmed by the
// broker or written to the spool file of its lane (FOLDER/backup.log and
// FOLDER/backup.evt) from which it is replayed when the broker is reachable
// again. A message can be delivered more than once (after a reconnect the
// publisher republishes everything the broker had not confirmed); consumers can
// drop duplicates by Delivery.MessageID, or let WithDedup drop the copies one
// consumer sees within a bounded window of ids. An event that no queue is bound to is
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
// SyncConsumer handles one delivery at a time, AsyncConsumer several at once
// (WithConcurrency). LogMsgConsumer and EventMsgConsumer are consumers preset
// with the names of the log and event paths; they handle one delivery at a
// time unless given WithConcurrency. A callback's nil result acknowledges the delivery, an
// error rejects it (dead-lettered if the queue has a dead-letter exchange), an
// error made with Requeue puts it back on the queue, and a panic is recovered,
// logged and rejected. A consumer without a callback does not consume: Run
// declares and binds its queue and waits for SetCallback.
//
// # Configuration
//
// Settings come from options passed in code, then from an OMQS.cfg file, then
// from built-in defaults, in that order of priority. See Config and LoadConfig.
//
// # Testing without a broker
//
// WithURL("memory://"), or MQURL=memory:// in OMQS.cfg, runs the Manager, both
// publishers and every consumer on a broker inside the process. All clients of
// the process that use the same URL share one broker; memory://NAME is
// another broker for each NAME (a name without / ? # @), so that each test
// can have its own:
//
//	url := "memory://" + strings.ReplaceAll(t.Name(), "/", ".")
//	m, _ := omqs.NewManager(omqs.WithURL(url))
//	c, _ := omqs.NewEventMsgConsumer(omqs.WithURL(url), omqs.WithCallback(cb))
//
// It behaves as RabbitMQ 3.10 does for everything this package uses: direct,
// fanout, topic and headers exchanges; durable declarations, and 406
// PRECONDITION_FAILED when an exchange or queue is declared again with other
// settings; bindings; competing consumers of one queue served in turn, and a
// message copied to every bound queue; prefetch; acknowledgement, rejection,
// dead-lettering and requeueing with Delivery.Redelivered; quorum queues'
// delivery counts; publisher confirms and mandatory returns. A message no
// queue is bound to receive vanishes, or is returned when it is mandatory.
// The behaviour tests of this package run on both brokers, so that the two
// cannot drift apart.
//
// Where the in-process broker must differ:
//
//   - Nothing persists: durable exchanges and queues and persistent messages
//     last as long as the process. A broker keeps them between tests that
//     use its name; a name per test starts from nothing.
//   - Only the process's own clients reach it: a producer and a consumer in
//     two programs need RabbitMQ.
//   - There is no network: no TLS, credentials, heartbeats or TCP
//     back-pressure, and connecting never fails. RECONNECT_INTERVAL and
//     RECONNECT_TIMES matter only when the broker closes connections, which
//     its own tests provoke to test reconnects.
//   - Memory is bounded: a queue declared without x-max-length holds at most
//     100,000 ready messages, then refuses more as x-overflow reject-publish
//     does. The broker nacks them: SyncPublisher.Publish returns ErrNacked,
//     an AsyncPublisher counts them in Stats.Nacked, and the Manager's
//     workers write them to the spool and try again later. RabbitMQ sets no
//     such limit by default.
//
// Send* returns before the message reaches the broker: a test calls
// Manager.Stop (which waits for the broker's confirms) or waits for its
// consumer's callback before it checks what arrived.
//
// # Logging
//
// LogManager builds a *slog.Logger whose output follows the [Log] section of
// OMQS.cfg: a Python logging format string, stream or file output, rotation by
// size or time. Manager.SlogHandler ships an application's slog records
// through the Manager's log lane, as JSON under the key of their level.
package omqs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
	// ContentType is the MIME type of Body, such as "application/json".
	// Empty, the message goes without one (every property costs the broker
	// work on each message; see the README's "Performance").
	ContentType string

	jseq uint64 // the Manager's journal entry it came from (see WithJournal), or 0
}

// Delivery is a message received by a consumer.
//
// OMQS for Go's publishers set MessageID and Timestamp and publish
// persistent messages; ContentType when the sender gave one
// (Message.ContentType, SendEventJSON) and AppID with WithAppID. The Python
// original set none of them on events, and only ContentType "text/plain" on
// logs, which it published transient (DeliveryMode 1): see the README's
// "Running beside the Python original".
type Delivery struct {
	Exchange    string
	RoutingKey  string
	Body        []byte
	ContentType string
	// MessageID is the id the publisher gave; "" when it gave none, as the
	// Python original never did. Without it the consumer's MAX_REDELIVERIES
	// count identifies the message by its exchange, routing key and body (so
	// identical messages share one count), and duplicates cannot be told
	// apart by id.
	MessageID string
	AppID     string
	Timestamp time.Time
	Headers   map[string]any
	// DeliveryMode is the publisher's: 2 persistent, 1 transient, 0 not set
	// (transient too). See Persistent.
	DeliveryMode uint8
	// Redelivered is true when the broker delivered this message before (to this
	// or another consumer) and it was not acknowledged.
	Redelivered bool
}

// Persistent reports whether the message was published persistent (delivery
// mode 2): a durable queue keeps it across a broker restart. Messages from
// the Python original are not.
func (d Delivery) Persistent() bool { return d.DeliveryMode == amqpPersistent }

// amqpPersistent is AMQP's delivery mode of a persistent message.
const amqpPersistent = 2

// LegacyEOF is the body the Python original's manager.stop() published on
// each lane (log key "info", event key DefaultEventKey) before it exited.
const LegacyEOF = "EOF"

// IsLegacyEOF reports whether d is the sentinel the Python original's stop()
// published: the body "EOF" with no message id (OMQS for Go gives every
// message one). It carries nothing; a callback that shares a queue with
// Python producers can acknowledge and skip it:
//
//	if d.IsLegacyEOF() {
//		return nil
//	}
func (d Delivery) IsLegacyEOF() bool { return d.MessageID == "" && string(d.Body) == LegacyEOF }

// Callback handles one delivery. It returns nil to acknowledge the delivery,
// an error to reject it, or Requeue(err) to put it back on the queue. A panic
// is recovered, logged with its stack and treated as a rejection.
type Callback func(ctx context.Context, d Delivery) error

// Returned is an unroutable message the broker returned (a mandatory publish
// that no queue was bound to receive).
type Returned struct {
	Exchange   string
	Key        string
	MessageID  string
	Body       []byte
	ReplyCode  int
	ReplyText  string
	ReceivedAt time.Time
}

// checkKey reports a routing key AMQP cannot carry.
func checkKey(k string) error {
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: routing key is %d bytes, longer than %d", ErrInvalidMessage, len(k), MaxKeyLen)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: routing key %q is not valid UTF-8", ErrInvalidMessage, k)
	}
	return nil
}

func checkName(what, n string) error {
	if len(n) > MaxKeyLen {
		return fmt.Errorf("%s name is %d bytes, longer than %d", what, len(n), MaxKeyLen)
	}
	if !utf8.ValidString(n) {
		return fmt.Errorf("%s name %q is not valid UTF-8", what, n)
	}
	return nil
}

// MaxBodySize is the largest message body OMQS publishes: RabbitMQ's default
// max_message_size (128 MiB). Larger bodies are refused with ErrInvalidMessage.
const MaxBodySize = 128 << 20

// idPrefix makes message ids unique across processes; the counter makes them
// unique within one.
var (
	idPrefix  = newIDPrefix()
	idCounter atomic.Uint64
)

func newIDPrefix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; fall back to the clock.
		binary.BigEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return hex.EncodeToString(b[:]) + "-"
}

// newMessageID returns a message id unique to this message.
func newMessageID() string {
	var buf [40]byte
	b := append(buf[:0], idPrefix...)
	b = strconv.AppendUint(b, idCounter.Add(1), 10)
	return string(b)
}

// spoolPath joins the spool folder and file name.
func spoolPath(dir, file string) string { return filepath.Join(dir, file) }
