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
// size or time.
package omqs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/omqs-go/omqs/internal/dispatch"
	"github.com/omqs-go/omqs/internal/transport"
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
	// ErrStopped: Send*, Publish or Run was called once Stop had begun (or,
	// for a consumer's Run, after Run had returned).
	ErrStopped = errors.New("omqs: stopped")
	// ErrRunning: a consumer's Run was called while it was running.
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

// Option configures a Manager, a publisher or a consumer. One Option type
// serves every constructor; an option that does not apply to the thing being
// built makes its constructor return an error wrapping ErrInvalidConfig.
//
// Options override the configuration file, which overrides the built-in
// defaults. WithConfig and WithConfigFile choose the file (or Config) and are
// applied first wherever they appear in the list.
type Option struct {
	name  string
	scope scope
	base  bool // applied before the others
	apply func(*settings) error
}

// ConsumerOption is the Option type, named for the consumer constructors.
type ConsumerOption = Option

type scope uint8

const (
	forManager scope = 1 << iota
	forPublisher
	forConsumer
	forAll = forManager | forPublisher | forConsumer
)

func (s scope) String() string {
	switch s {
	case forManager:
		return "a Manager"
	case forPublisher:
		return "a publisher"
	case forConsumer:
		return "a consumer"
	}
	return "this constructor"
}

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

// Overflow is what Send* does when its buffer is full.
type Overflow int

const (
	// OverflowFail makes Send* return ErrBufferFull at once (the default).
	OverflowFail Overflow = iota
	// OverflowWait makes Send* wait for room until Stop begins. The
	// Send*Context methods wait until their context ends under either policy.
	OverflowWait
)

// settings is what options build; constructors read it.
type settings struct {
	cfg *Config

	name   string
	logger *slog.Logger
	tls    *tls.Config

	// Manager
	overflow        Overflow
	logWorker       MsgWorker
	eventWorker     MsgWorker
	background      bool
	onReturn        func(Returned)
	onError         func(error)
	spoolDir        string
	appID           string
	reconnectWaitFn func(ctx context.Context, d time.Duration) error // tests

	// Topology overrides (publishers and consumers).
	section         string
	exchange        *string
	exchangeType    *string
	exchangeDurable *bool
	queue           *string
	queueDurable    *bool
	queueType       *string
	keys            []string
	keysSet         bool
	mandatory       *bool

	// Consumers.
	noAck           bool
	prefetch        *int
	concurrency     int
	callback        Callback
	deadLetter      *string
	maxRedeliveries *int
}

// buildSettings applies opts for a constructor of the given scope. The
// configuration is, in order: WithConfig/WithConfigFile, $OMQS_CONFIG,
// ./OMQS.cfg, DefaultConfig().
func buildSettings(target scope, ctor string, opts []Option) (*settings, error) {
	s := &settings{}
	for _, pass := range []bool{true, false} {
		for _, o := range opts {
			if o.apply == nil {
				return nil, fmt.Errorf("%w: %s: a zero Option was passed", ErrInvalidConfig, ctor)
			}
			if o.base != pass {
				continue
			}
			if o.scope&target == 0 {
				return nil, fmt.Errorf("%w: %s does not apply to %s (%s)", ErrInvalidConfig, o.name, target, ctor)
			}
			if pass && s.cfg != nil {
				return nil, fmt.Errorf("%w: %s: only one of WithConfig and WithConfigFile may be given", ErrInvalidConfig, ctor)
			}
			if err := o.apply(s); err != nil {
				return nil, fmt.Errorf("%w: %s: %s: %v", ErrInvalidConfig, ctor, o.name, err)
			}
		}
		if pass && s.cfg == nil {
			cfg, err := resolveConfig()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ctor, err)
			}
			s.cfg = cfg.clone()
		}
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ctor, err)
	}
	s.cfg.normalize()
	return s, nil
}

func opt(name string, sc scope, f func(*settings) error) Option {
	return Option{name: name, scope: sc, apply: f}
}

// WithConfig uses cfg (a copy of it) instead of the configuration file.
func WithConfig(cfg *Config) Option {
	return Option{name: "WithConfig", scope: forAll, base: true, apply: func(s *settings) error {
		if cfg == nil {
			return errors.New("nil *Config")
		}
		s.cfg = cfg.clone()
		return nil
	}}
}

// WithConfigFile reads the configuration from path (see LoadConfig).
func WithConfigFile(path string) Option {
	return Option{name: "WithConfigFile", scope: forAll, base: true, apply: func(s *settings) error {
		cfg, err := LoadConfig(path)
		if err != nil {
			return err
		}
		s.cfg = cfg
		return nil
	}}
}

// WithURL sets the broker URL (MQURL): amqp://, amqps://, memory:// or
// memory://NAME, or several amqp(s) URLs separated by commas, tried in turn.
func WithURL(url string) Option {
	return opt("WithURL", forAll, func(s *settings) error {
		if _, err := transport.ParseURLs(url); err != nil {
			return err
		}
		s.cfg.Global.MQURL = url
		return nil
	})
}

// WithName names the Manager, publisher or consumer in log lines and in the
// broker's connection list.
func WithName(name string) Option {
	return opt("WithName", forAll, func(s *settings) error { s.name = name; return nil })
}

// WithLogger sends the library's own log lines to l instead of a LogManager
// built from the [Log] section.
func WithLogger(l *slog.Logger) Option {
	return opt("WithLogger", forAll, func(s *settings) error {
		if l == nil {
			return errors.New("nil *slog.Logger")
		}
		s.logger = slog.New(redacting(l.Handler()))
		return nil
	})
}

// WithTLSConfig uses c for amqps:// connections instead of the URL's
// cacertfile, certfile, keyfile and server_name_indication parameters.
func WithTLSConfig(c *tls.Config) Option {
	return opt("WithTLSConfig", forAll, func(s *settings) error {
		if c == nil {
			return errors.New("nil *tls.Config")
		}
		s.tls = c.Clone()
		return nil
	})
}

// WithReconnect sets the wait between connection attempts and how many
// consecutive attempts may fail (RECONNECT_INTERVAL, RECONNECT_TIMES; 0 times
// means no limit).
func WithReconnect(interval time.Duration, times int) Option {
	return opt("WithReconnect", forAll, func(s *settings) error {
		if interval < 0 {
			return fmt.Errorf("interval %v is negative", interval)
		}
		if times < 0 {
			return fmt.Errorf("times %d is negative", times)
		}
		s.cfg.Global.ReconnectInterval = interval
		s.cfg.Global.ReconnectTimes = times
		return nil
	})
}

// WithBufferSize sets the capacity of each of the Manager's two buffers
// (BUFFER_SIZE).
func WithBufferSize(n int) Option {
	return opt("WithBufferSize", forManager, func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.BufferSize = n
		return nil
	})
}

// WithMaxInFlight sets how many publishes may wait for the broker's confirm
// at once (MAX_IN_FLIGHT).
func WithMaxInFlight(n int) Option {
	return opt("WithMaxInFlight", forManager|forPublisher, func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.MaxInFlight = n
		return nil
	})
}

// WithOverflow sets what Send* does when its buffer is full.
func WithOverflow(o Overflow) Option {
	return opt("WithOverflow", forManager, func(s *settings) error {
		if o != OverflowFail && o != OverflowWait {
			return fmt.Errorf("unknown policy %d", o)
		}
		s.overflow = o
		return nil
	})
}

// WithLogWorker replaces the built-in LogMsgWorker.
func WithLogWorker(w MsgWorker) Option {
	return opt("WithLogWorker", forManager, func(s *settings) error {
		if w == nil {
			return errors.New("nil MsgWorker")
		}
		s.logWorker = w
		return nil
	})
}

// WithEventWorker replaces the built-in EventMsgWorker.
func WithEventWorker(w MsgWorker) Option {
	return opt("WithEventWorker", forManager, func(s *settings) error {
		if w == nil {
			return errors.New("nil MsgWorker")
		}
		s.eventWorker = w
		return nil
	})
}

// WithRetryOnFailedConnect makes Manager.Start return at once and connect in
// the background; messages sent meanwhile wait in the buffers.
func WithRetryOnFailedConnect(on bool) Option {
	return opt("WithRetryOnFailedConnect", forManager, func(s *settings) error { s.background = on; return nil })
}

// WithReturnHandler calls f for each message the broker returned as
// unroutable. f runs on a goroutine of the library, one call at a time, and
// must not block.
func WithReturnHandler(f func(Returned)) Option {
	return opt("WithReturnHandler", forManager|forPublisher, func(s *settings) error { s.onReturn = f; return nil })
}

// WithErrorHandler calls f for errors that happen in the background
// (reconnects, spooling, a custom worker's failures). f runs on a goroutine
// of the library, one call at a time, and must not block.
func WithErrorHandler(f func(error)) Option {
	return opt("WithErrorHandler", forManager|forPublisher|forConsumer, func(s *settings) error { s.onError = f; return nil })
}

// WithSpoolDir sets the folder of the spool files backup.log and backup.evt
// (default: the [Log] FOLDER). For a publisher it enables spooling to
// DIR/<exchange>.spool.
func WithSpoolDir(dir string) Option {
	return opt("WithSpoolDir", forManager|forPublisher, func(s *settings) error {
		if dir == "" {
			return errors.New("empty folder")
		}
		s.spoolDir = dir
		return nil
	})
}

// WithAppID sets the AMQP app-id property of published messages (default:
// the name).
func WithAppID(id string) Option {
	return opt("WithAppID", forManager|forPublisher, func(s *settings) error { s.appID = id; return nil })
}

// WithSection takes a publisher's or consumer's topology defaults from another
// configuration section: "AsyncPublisher", "SyncPublisher",
// "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter", "SyncRouter",
// "LogConsumer" or "EventConsumer".
func WithSection(name string) Option {
	return opt("WithSection", forPublisher|forConsumer, func(s *settings) error {
		switch name {
		case "AsyncPublisher", "SyncPublisher", "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter", "SyncRouter", "LogConsumer", "EventConsumer":
			s.section = name
			return nil
		}
		return fmt.Errorf("unknown section %q", name)
	})
}

// WithExchange sets the exchange, its type (topic, direct, fanout, headers)
// and durability.
func WithExchange(name, kind string, durable bool) Option {
	return opt("WithExchange", forPublisher|forConsumer, func(s *settings) error {
		switch kind {
		case "topic", "direct", "fanout", "headers":
		default:
			return fmt.Errorf("exchange type %q is not one of topic, direct, fanout, headers", kind)
		}
		if err := checkName("exchange", name); err != nil {
			return err
		}
		s.exchange, s.exchangeType, s.exchangeDurable = &name, &kind, &durable
		return nil
	})
}

// WithQueue sets the queue to declare and bind ("" for none on a publisher;
// a server-named exclusive queue on a consumer).
func WithQueue(name string) Option {
	return opt("WithQueue", forPublisher|forConsumer, func(s *settings) error {
		if err := checkName("queue", name); err != nil {
			return err
		}
		s.queue = &name
		return nil
	})
}

// WithQueueDurable sets whether the queue survives a broker restart.
func WithQueueDurable(durable bool) Option {
	return opt("WithQueueDurable", forPublisher|forConsumer, func(s *settings) error { s.queueDurable = &durable; return nil })
}

// WithQueueType declares the queue as "classic" or "quorum" (x-queue-type).
func WithQueueType(kind string) Option {
	return opt("WithQueueType", forPublisher|forConsumer, func(s *settings) error {
		if kind != "classic" && kind != "quorum" {
			return fmt.Errorf("queue type %q is not classic or quorum", kind)
		}
		s.queueType = &kind
		return nil
	})
}

// WithKeys sets the routing keys: for a consumer the topic patterns its queue
// is bound to; for a publisher the keys its queue is bound to, the first being
// the key of a Publish with key "".
func WithKeys(keys ...string) Option {
	return opt("WithKeys", forPublisher|forConsumer, func(s *settings) error {
		for _, k := range keys {
			if err := checkKey(k); err != nil {
				return err
			}
		}
		s.keys = append([]string(nil), keys...)
		s.keysSet = true
		return nil
	})
}

// WithMandatory sets whether publishes are mandatory (unroutable messages
// are returned and reported). Default: true for AsyncPublisher, false for
// SyncPublisher.
func WithMandatory(on bool) Option {
	return opt("WithMandatory", forPublisher, func(s *settings) error { s.mandatory = &on; return nil })
}

// WithNoAck makes the broker consider a delivery acknowledged as soon as it
// is sent (auto-ack): faster, but a crash loses the deliveries in flight, and
// so does ending Run's context (see Run: each such delivery is logged as lost).
func WithNoAck(on bool) Option {
	return opt("WithNoAck", forConsumer, func(s *settings) error { s.noAck = on; return nil })
}

// WithPrefetch sets how many unacknowledged deliveries the broker sends a
// consumer at once (PREFETCH). 0 means no limit.
func WithPrefetch(n int) Option {
	return opt("WithPrefetch", forConsumer, func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("%d is negative", n)
		}
		s.prefetch = &n
		return nil
	})
}

// WithConcurrency sets how many callbacks an AsyncConsumer runs at once.
func WithConcurrency(n int) Option {
	return opt("WithConcurrency", forConsumer, func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.concurrency = n
		return nil
	})
}

// WithCallback sets the consumer's callback (see SetCallback).
func WithCallback(cb Callback) Option {
	return opt("WithCallback", forConsumer, func(s *settings) error {
		if cb == nil {
			return errors.New("nil Callback")
		}
		s.callback = cb
		return nil
	})
}

// WithDeadLetterExchange declares a fanout exchange of that name and sets it
// as the queue's dead-letter exchange: rejected deliveries go there.
func WithDeadLetterExchange(name string) Option {
	return opt("WithDeadLetterExchange", forConsumer, func(s *settings) error {
		if err := checkName("exchange", name); err != nil {
			return err
		}
		s.deadLetter = &name
		return nil
	})
}

// WithMaxRedeliveries bounds how many times one message is requeued by this
// consumer's callbacks (or redelivered, where the broker counts deliveries)
// before it is rejected instead (MAX_REDELIVERIES). 0 means no limit.
func WithMaxRedeliveries(n int) Option {
	return opt("WithMaxRedeliveries", forConsumer, func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("%d is negative", n)
		}
		s.maxRedeliveries = &n
		return nil
	})
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

// isText reports whether b is UTF-8 text.
func isText(b []byte) bool { return utf8.Valid(b) }

// spoolPath joins the spool folder and file name.
func spoolPath(dir, file string) string { return filepath.Join(dir, file) }

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

// handlerGrace is how long Stop (or the end of a consumer's Run) waits for
// the error and return handler calls still queued. Handlers must not block;
// one that does is left to return on its own, and the calls queued behind it
// are dropped.
const handlerGrace = 2 * time.Second

// closeHandlers closes a handler dispatcher, waiting at most handlerGrace.
func closeHandlers(d *dispatch.Dispatcher, log *slog.Logger, who string) {
	ctx, cancel := context.WithTimeout(context.Background(), handlerGrace)
	defer cancel()
	if err := d.CloseContext(ctx); err != nil {
		log.Warn("omqs: an error or return handler did not return in time; the calls queued behind it were dropped",
			"name", who, "dropped", d.Dropped())
	}
}
