package omqs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omqs-go/omqs/internal/transport"
)

// Option configures a Manager, a publisher or a consumer. One Option type
// serves every constructor; an option that does not apply to the thing being
// built makes its constructor return an error wrapping ErrInvalidConfig.
// The constructors take:
//
//   - all of them: WithConfig, WithConfigFile, WithURL, WithName, WithLogger,
//     WithTLSConfig, WithReconnect, WithErrorHandler, WithObserver;
//   - NewManager: WithBufferSize, WithBufferBytes, WithMaxInFlight,
//     WithMaxInFlightBytes, WithOverflow, WithLogWorker, WithEventWorker,
//     WithRetryOnFailedConnect, WithReturnHandler, WithSpoolDir, WithAppID;
//   - publishers and consumers: WithSection, WithExchange, WithQueue,
//     WithQueueDurable, WithQueueType, WithQueueConfig, WithKeys;
//   - NewSyncPublisher and NewAsyncPublisher: WithMaxInFlight,
//     WithMaxInFlightBytes, WithReturnHandler, WithSpoolDir, WithAppID,
//     WithMandatory;
//   - the four consumer constructors: WithNoAck, WithPrefetch,
//     WithConcurrency, WithCallback, WithDeadLetterExchange,
//     WithMaxRedeliveries, WithMaxBodySize, WithDeliveryLimit, WithDedup,
//     WithQueueExpires.
//
// Options override the configuration file, which overrides the built-in
// defaults. WithConfig and WithConfigFile choose the file (or Config) and are
// applied first wherever they appear in the list.
type Option struct {
	name  string // the function that made it, e.g. "WithSection"
	arg   string // its argument as the caller wrote it, for messages
	base  bool   // applied before the others
	apply func(*settings) error
}

// label is the option as the caller wrote it, e.g. WithSection("LogConsumer").
func (o Option) label() string { return o.name + "(" + o.arg + ")" }

// ConsumerOption is another name for Option (an alias: the same type, not a
// new one). The consumer constructors are declared with it, as the port's
// API spells them (NewSyncConsumer(opts ...ConsumerOption)), so that their
// signatures read as in the original library; any Option can be passed, and
// one that does not apply to a consumer is refused as for every constructor.
type ConsumerOption = Option

// ctorRule is what one constructor accepts.
type ctorRule struct {
	options  []string // the options it takes, by name
	sections []string // the sections WithSection may name (none: WithSection is not taken)
	section  string   // the section read without WithSection ("": built-in defaults)
}

// The options each kind of constructor takes.
var (
	commonOptions = []string{
		"WithConfig", "WithConfigFile", "WithURL", "WithName", "WithLogger",
		"WithTLSConfig", "WithReconnect", "WithErrorHandler", "WithObserver",
	}
	topologyOptions = []string{
		"WithSection", "WithExchange", "WithQueue", "WithQueueDurable", "WithQueueType", "WithQueueConfig", "WithKeys",
	}
	managerOptions = concat(commonOptions, []string{
		"WithBufferSize", "WithBufferBytes", "WithMaxInFlight", "WithMaxInFlightBytes", "WithOverflow", "WithLogWorker", "WithEventWorker",
		"WithRetryOnFailedConnect", "WithReturnHandler", "WithSpoolDir", "WithAppID", "WithJournal", "WithMandatory",
	})
	publisherOptions = concat(commonOptions, topologyOptions, []string{
		"WithMaxInFlight", "WithMaxInFlightBytes", "WithReturnHandler", "WithSpoolDir", "WithAppID", "WithMandatory",
	})
	consumerOptions = concat(commonOptions, topologyOptions, []string{
		"WithNoAck", "WithPrefetch", "WithConcurrency", "WithCallback",
		"WithDeadLetterExchange", "WithMaxRedeliveries", "WithMaxBodySize", "WithDeliveryLimit", "WithDedup", "WithQueueExpires",
	})
	publisherSections = []string{
		"AsyncPublisher", "SyncPublisher", "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter", "SyncRouter",
	}
	consumerSections = []string{"LogConsumer", "EventConsumer"}
)

// ctorRules is the one table of the options and configuration sections each
// constructor accepts; buildSettings checks every option against it.
var ctorRules = map[string]ctorRule{
	"NewManager":          {options: managerOptions},
	"NewSyncPublisher":    {options: publisherOptions, sections: publisherSections, section: "SyncPublisher"},
	"NewAsyncPublisher":   {options: publisherOptions, sections: publisherSections, section: "AsyncPublisher"},
	"NewSyncConsumer":     {options: consumerOptions, sections: consumerSections},
	"NewAsyncConsumer":    {options: consumerOptions, sections: consumerSections},
	"NewLogMsgConsumer":   {options: consumerOptions, sections: consumerSections, section: "LogConsumer"},
	"NewEventMsgConsumer": {options: consumerOptions, sections: consumerSections, section: "EventConsumer"},
}

func concat(lists ...[]string) []string {
	var all []string
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
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
	cfgInCode bool // the Config came from WithConfig: $OMQS_MQURL does not apply
	cfgFound  bool // resolveConfig found a file
	cfg       *Config

	name     string
	logger   *slog.Logger
	tls      *tls.Config
	observer Observer

	// Manager
	overflow    Overflow
	logWorker   MsgWorker
	eventWorker MsgWorker
	background  bool
	onReturn    func(Returned)
	onError     func(error)
	spoolDir    string
	appID       string

	// Topology overrides (publishers and consumers).
	section         string
	exchange        *string
	exchangeType    *string
	exchangeDurable *bool
	queue           *string
	queueDurable    *bool
	queueType       *string
	deadLetter      *string
	messageTTL      *time.Duration
	maxLength       *int
	keys            []string
	keysSet         bool
	mandatory       *bool

	// Consumers.
	noAck           bool
	prefetch        *int
	concurrency     int
	callback        Callback
	maxRedeliveries *int
	maxBodySize     int // 0: the section's MAX_BODY_SIZE
	deliveryLimit   *int
	dedupSet        bool
	dedupSize       int
	dedupWindow     time.Duration
	queueExpires    *time.Duration
}

// buildSettings applies opts for the constructor ctor, refusing the options
// and sections ctorRules does not give it. The configuration is, in order:
// WithConfig/WithConfigFile, $OMQS_CONFIG, ./OMQS.cfg, DefaultConfig().
func buildSettings(ctor string, opts []Option) (*settings, error) {
	r, ok := ctorRules[ctor]
	if !ok {
		return nil, invalidConfig(ctor, "no rule for this constructor")
	}
	return r.build(ctor, opts)
}

func (r ctorRule) build(ctor string, opts []Option) (*settings, error) {
	invalid := func(format string, args ...any) error { return invalidConfig(ctor, format, args...) }
	s := &settings{}
	for _, pass := range []bool{true, false} {
		for _, o := range opts {
			if o.apply == nil {
				return nil, invalid("a zero Option was passed")
			}
			if o.base != pass {
				continue
			}
			if !slices.Contains(r.options, o.name) {
				return nil, invalid("%s does not apply to %s", o.label(), ctor)
			}
			if pass && s.cfg != nil {
				return nil, invalid("only one of WithConfig and WithConfigFile may be given")
			}
			if err := o.apply(s); err != nil {
				// Options that load a file return errors that wrap
				// ErrInvalidConfig already: say it once.
				detail := strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": ")
				return nil, redactError(invalid("%s: %s", o.label(), detail))
			}
		}
		if pass && s.cfg == nil {
			cfg, err := resolveConfig()
			if err != nil {
				return nil, errorOf(ctor, err)
			}
			s.cfg = cfg.clone()
			s.cfgFound = cfg.Source != ""
		}
		if pass && !s.cfgInCode {
			// $OMQS_MQURL overrides the file's MQURL; WithURL overrides both.
			if err := s.cfg.applyURLEnv(); err != nil {
				return nil, errorOf(ctor, err)
			}
		}
	}
	if s.section == "" {
		s.section = r.section
	} else if !slices.Contains(r.sections, s.section) {
		return nil, invalid("WithSection(%q): %s reads one of the sections %s", s.section, ctor, strings.Join(r.sections, ", "))
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, errorOf(ctor, err)
	}
	s.cfg.normalize()
	return s, nil
}

// invalidConfig returns an error of the constructor ctor wrapping
// ErrInvalidConfig: "omqs: <ctor>: invalid configuration: <detail>".
func invalidConfig(ctor, format string, args ...any) error {
	return errorOf(ctor, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
}

// checkQueue refuses a queue the broker would refuse to declare, for every
// constructor alike: a quorum queue must be durable, and the queue type is
// classic or quorum. A topology without a queue passes.
func checkQueue(ctor string, t topology) error {
	if t.queue == "" {
		return nil
	}
	invalid := func(format string, args ...any) error { return invalidConfig(ctor, format, args...) }
	switch t.queueType {
	case "", "classic":
	case "quorum":
		if !t.queueDurable {
			return invalid("queue %q: a quorum queue must be durable (WithQueueDurable(true), or QUEUE_DURABLE=True)", t.queue)
		}
	default:
		return invalid("queue %q: queue type %q is not classic or quorum", t.queue, t.queueType)
	}
	if t.deliveryLimit != 0 && t.queueType != "quorum" {
		return invalid("queue %q: DELIVERY_LIMIT %d needs QUEUE_TYPE = quorum (a %s queue has no delivery limit)", t.queue, t.deliveryLimit, queueTypeOf(t.queueType))
	}
	return nil
}

// ownLogger makes s.logger the logger of a LogManager named name, built from
// the [Log] section, unless WithLogger gave one: every constructor logs
// there by default. It returns that LogManager (nil with WithLogger), which
// the caller closes when it stops.
func (s *settings) ownLogger(ctor, name string) (*LogManager, error) {
	if s.logger == nil {
		lm, err := NewLogManager(name, "OMQS.log", WithLogConfig(s.cfg.Log))
		if err != nil {
			return nil, errorOf(ctor, err)
		}
		s.logger = lm.Logger()
		defer s.logConfig(ctor)
		return lm, nil
	}
	s.logConfig(ctor)
	return nil, nil
}

// logConfig logs, once for the constructor ctor, the configuration's
// warnings (an unknown key, a pika parameter ignored, ...) and, when no
// OMQS.cfg was found, which broker the built-in defaults name.
func (s *settings) logConfig(ctor string) {
	if !s.cfgInCode && !s.cfgFound {
		s.logger.Info("omqs: no configuration file ($"+cfgEnvVar+" unset, no "+cfgFileName+" in the working directory): using the built-in defaults",
			"constructor", ctor, "broker", transport.Redact(s.cfg.Global.MQURL))
	}
	for _, w := range s.cfg.Warnings {
		s.logger.Warn("omqs: configuration warning", "warning", w, "constructor", ctor)
	}
}

// opt makes an Option named name whose argument prints as arg.
func opt(name, arg string, f func(*settings) error) Option {
	return Option{name: name, arg: arg, apply: f}
}

// The arguments of options, as messages print them.
func quoted(s string) string { return strconv.Quote(s) }
func number(n int) string    { return strconv.Itoa(n) }
func boolean(b bool) string  { return strconv.FormatBool(b) }

func quotedList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// WithConfig uses cfg (a copy of it) instead of the configuration file.
func WithConfig(cfg *Config) Option {
	return Option{name: "WithConfig", arg: "…", base: true, apply: func(s *settings) error {
		if cfg == nil {
			return errors.New("nil *Config")
		}
		s.cfg = cfg.clone()
		s.cfgInCode = true
		return nil
	}}
}

// WithConfigFile reads the configuration from path (see LoadConfig).
func WithConfigFile(path string) Option {
	return Option{name: "WithConfigFile", arg: quoted(path), base: true, apply: func(s *settings) error {
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
// It is checked as LoadConfig checks MQURL; its warnings (pika parameters
// ignored, a heartbeat the broker caps) are added to the Config's Warnings.
func WithURL(url string) Option {
	return opt("WithURL", quoted(transport.Redact(url)), func(s *settings) error {
		_, warns, err := transport.ParseMQURL(url)
		if err != nil {
			return errors.New(transport.Redact(err.Error()))
		}
		s.cfg.Global.MQURL = url
		for _, w := range warns {
			s.cfg.Warnings = append(s.cfg.Warnings, "WithURL: "+w)
		}
		return nil
	})
}

// WithName names the Manager, publisher or consumer in log lines and in the
// broker's connection list.
func WithName(name string) Option {
	return opt("WithName", quoted(name), func(s *settings) error { s.name = name; return nil })
}

// WithLogger sends the library's own log lines to l instead of a LogManager
// built from the [Log] section. Their context marks them as the library's,
// so that a Manager's SlogHandler, if l leads to one, passes them to its
// fallback instead of its lane. When l is slog's initial default logger
// (slog.Default() before any slog.SetDefault), which writes through the log
// package, the lines go, once slog.SetDefault was called, to the new
// default's handler directly, where the log package would have sent them
// without their level, attributes and mark.
func WithLogger(l *slog.Logger) Option {
	return opt("WithLogger", "…", func(s *settings) error {
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
	return opt("WithTLSConfig", "…", func(s *settings) error {
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
	return opt("WithReconnect", fmt.Sprintf("%v, %d", interval, times), func(s *settings) error {
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
	return opt("WithBufferSize", number(n), func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.BufferSize = n
		return nil
	})
}

// WithMaxInFlight sets how many published messages may wait for the
// broker's confirm at once (MAX_IN_FLIGHT), for each publishing connection:
// an AsyncPublisher's, a SyncPublisher's (concurrent Publish calls) and each
// of a Manager's built-in workers'. A publish waits while that many are
// unconfirmed.
func WithMaxInFlight(n int) Option {
	return opt("WithMaxInFlight", number(n), func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.MaxInFlight = n
		return nil
	})
}

// WithBufferBytes bounds the message bodies each of the Manager's two lanes
// holds, in bytes (BUFFER_BYTES, default DefaultBufferBytes): those Send*
// accepted that are not yet confirmed by the broker, written to the spool or
// dropped, wherever they are (in the buffer, with the worker or waiting for
// a confirm). A Send* that would go past it is refused with ErrBufferFull
// (or waits, as when the buffer is full); a body larger than n could never
// fit and is refused with ErrInvalidMessage.
func WithBufferBytes(n int) Option {
	return opt("WithBufferBytes", number(n), func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.BufferBytes = n
		return nil
	})
}

// WithMaxInFlightBytes bounds the bodies a publisher holds unconfirmed, in
// bytes (MAX_IN_FLIGHT_BYTES, default DefaultMaxInFlightBytes): Publish
// waits, as it does for MAX_IN_FLIGHT, while the next body would go past it.
// A body larger than n is published alone, once nothing else is in flight.
func WithMaxInFlightBytes(n int) Option {
	return opt("WithMaxInFlightBytes", number(n), func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.cfg.Global.MaxInFlightBytes = n
		return nil
	})
}

// WithOverflow sets what Send* does when its buffer is full.
func WithOverflow(o Overflow) Option {
	return opt("WithOverflow", number(int(o)), func(s *settings) error {
		if o != OverflowFail && o != OverflowWait {
			return fmt.Errorf("unknown policy %d", o)
		}
		s.overflow = o
		return nil
	})
}

// WithLogWorker replaces the built-in LogMsgWorker with w. When w is a
// LogMsgWorker, or embeds one, NewManager configures that LogMsgWorker as it
// would its own.
func WithLogWorker(w MsgWorker) Option {
	return opt("WithLogWorker", "…", func(s *settings) error {
		if w == nil {
			return errors.New("nil MsgWorker")
		}
		s.logWorker = w
		return nil
	})
}

// WithEventWorker replaces the built-in EventMsgWorker with w. When w is an
// EventMsgWorker, or embeds one, NewManager configures that EventMsgWorker
// as it would its own.
func WithEventWorker(w MsgWorker) Option {
	return opt("WithEventWorker", "…", func(s *settings) error {
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
	return opt("WithRetryOnFailedConnect", boolean(on), func(s *settings) error { s.background = on; return nil })
}

// WithReturnHandler calls f for each message the broker returned as
// unroutable. f runs on a goroutine of the library, one call at a time, and
// must not block.
func WithReturnHandler(f func(Returned)) Option {
	return opt("WithReturnHandler", "…", func(s *settings) error { s.onReturn = f; return nil })
}

// WithErrorHandler calls f for errors that happen in the background
// (reconnects, spooling, a custom worker's failures). f runs on a goroutine
// of the library, one call at a time, and must not block.
func WithErrorHandler(f func(error)) Option {
	return opt("WithErrorHandler", "…", func(s *settings) error { s.onError = f; return nil })
}

// WithSpoolDir sets the folder of the spool files backup.log and backup.evt
// (default: the [Log] FOLDER). For a publisher it enables spooling to
// DIR/<exchange>.spool, where every byte of the exchange name other than a
// letter, a digit, '.', '-' or '_' is written %XX. Start refuses a folder
// that its group or others may write to (ErrInvalidConfig).
func WithSpoolDir(dir string) Option {
	return opt("WithSpoolDir", quoted(dir), func(s *settings) error {
		if dir == "" {
			return errors.New("empty folder")
		}
		s.spoolDir = dir
		return nil
	})
}

// WithAppID sets the AMQP app-id property of published messages (default:
// none is sent).
func WithAppID(id string) Option {
	return opt("WithAppID", quoted(id), func(s *settings) error { s.appID = id; return nil })
}

// WithSection takes a publisher's or consumer's topology defaults from another
// configuration section. Publishers read "AsyncPublisher", "SyncPublisher",
// "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter" or "SyncRouter";
// consumers read "LogConsumer" or "EventConsumer". Any other name, and
// WithSection given to NewManager, make the constructor return an error
// wrapping ErrInvalidConfig.
func WithSection(name string) Option {
	return opt("WithSection", quoted(name), func(s *settings) error {
		if name == "" {
			return errors.New("empty section name")
		}
		s.section = name // checked against the constructor's sections in buildSettings
		return nil
	})
}

// WithExchange sets the exchange, its type (topic, direct, fanout, headers)
// and durability.
func WithExchange(name, kind string, durable bool) Option {
	return opt("WithExchange", fmt.Sprintf("%q, %q, %v", name, kind, durable), func(s *settings) error {
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
	return opt("WithQueue", quoted(name), func(s *settings) error {
		if err := checkName("queue", name); err != nil {
			return err
		}
		s.queue = &name
		return nil
	})
}

// WithQueueDurable sets whether the queue survives a broker restart.
func WithQueueDurable(durable bool) Option {
	return opt("WithQueueDurable", boolean(durable), func(s *settings) error { s.queueDurable = &durable; return nil })
}

// WithQueueType declares the queue as "classic" or "quorum" (x-queue-type).
func WithQueueType(kind string) Option {
	return opt("WithQueueType", quoted(kind), func(s *settings) error {
		if kind != "classic" && kind != "quorum" {
			return fmt.Errorf("queue type %q is not classic or quorum", kind)
		}
		s.queueType = &kind
		return nil
	})
}

// WithQueueConfig sets every setting of the queue at once, as a worker or
// consumer section describes it: name, durability, type, dead-letter
// exchange, message TTL and length limit. Give a publisher or a consumer the
// QueueConfig of the section it shares a queue with (such as
// cfg.EventWorker.QueueConfig()) and it declares the queue as that section's
// program does. Options after it change single settings.
func WithQueueConfig(q QueueConfig) Option {
	return opt("WithQueueConfig", fmt.Sprintf("%#v", q), func(s *settings) error {
		q.QueueType = queueTypeOf(q.QueueType)
		cs := cfgSection{"QueueConfig", cfgQueueFields(q.refs())}
		if err := cs.check(); err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": "))
		}
		s.queue, s.queueDurable, s.queueType = &q.Queue, &q.QueueDurable, &q.QueueType
		s.deadLetter, s.messageTTL, s.maxLength = &q.DeadLetterExchange, &q.MessageTTL, &q.MaxLength
		return nil
	})
}

// WithKeys sets the routing keys: for a consumer the topic patterns its queue
// is bound to; for a publisher the keys its queue is bound to, the first being
// the key of a Publish with key "".
//
// Consumers of one queue share its messages, whatever keys each of them
// bound: a binding adds the messages of its key to the queue, and any
// consumer of the queue may take them. So EventMsgConsumers left on the
// shared default queue "omqs.queue.event" with different keys take each
// other's events. A consumer that binds keys other than DefaultEventKey to
// that queue logs a warning saying so; give it a queue of its own with
// WithQueue (a name, or "" for a server-named queue that lives as long as
// its connection).
func WithKeys(keys ...string) Option {
	return opt("WithKeys", quotedList(keys), func(s *settings) error {
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

// WithMandatory sets whether publishes are mandatory: the broker returns a
// message no queue is bound to receive, and the publisher reports it
// (WithReturnHandler, Stats().Returned) instead of the message vanishing.
//
// Default: mandatory for an AsyncPublisher and a Manager's events, not for a
// SyncPublisher, and never for a Manager's logs. By default a message that
// the publisher's own queue is bound to receive goes without the flag:
// the publisher declares that durable queue and its bindings on every
// connection before publishing, so the broker has a queue for it, and the
// flag would cost the broker one internal message per delivery (about 8%
// of the confirmed rate on a single queue). WithMandatory(true) flags every
// message, for a queue that something else may delete or unbind while the
// publisher runs; WithMandatory(false) flags none.
func WithMandatory(on bool) Option {
	return opt("WithMandatory", boolean(on), func(s *settings) error { s.mandatory = &on; return nil })
}

// WithNoAck makes the broker consider a delivery acknowledged as soon as it
// is sent (auto-ack): faster, but a crash loses the deliveries in flight, and
// so does ending Run's context (see Run: each such delivery is logged as lost).
func WithNoAck(on bool) Option {
	return opt("WithNoAck", boolean(on), func(s *settings) error { s.noAck = on; return nil })
}

// WithPrefetch sets how many unacknowledged deliveries the broker sends a
// consumer at once (PREFETCH). 0 means no limit.
func WithPrefetch(n int) Option {
	return opt("WithPrefetch", number(n), func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("%d is negative", n)
		}
		s.prefetch = &n
		return nil
	})
}

// WithConcurrency sets how many callbacks a consumer runs at once: an
// AsyncConsumer (DefaultConcurrency by default), a LogMsgConsumer or an
// EventMsgConsumer (1 by default). A SyncConsumer runs one at a time and
// accepts only 1.
func WithConcurrency(n int) Option {
	return opt("WithConcurrency", number(n), func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%d must be at least 1", n)
		}
		s.concurrency = n
		return nil
	})
}

// WithCallback sets the consumer's callback (see SetCallback).
func WithCallback(cb Callback) Option {
	return opt("WithCallback", "…", func(s *settings) error {
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
	return opt("WithDeadLetterExchange", quoted(name), func(s *settings) error {
		if err := checkName("exchange", name); err != nil {
			return err
		}
		s.deadLetter = &name
		return nil
	})
}

// WithDeliveryLimit declares the queue with x-delivery-limit n
// (DELIVERY_LIMIT): RabbitMQ then dead-letters (or drops, without a
// dead-letter exchange) a message once it has been delivered n+1 times
// without being acknowledged. Unlike MAX_REDELIVERIES, the broker counts,
// so it also ends a delivery this client cannot parse (its connection drops
// before it can reject it), which would otherwise come back for ever. It
// needs a quorum queue (WithQueueType("quorum")); pair it with
// WithDeadLetterExchange to keep what it ends. 0 means no limit. A queue
// that exists with another limit is refused by the broker (ErrInvalidQueue).
func WithDeliveryLimit(n int) Option {
	return opt("WithDeliveryLimit", number(n), func(s *settings) error {
		if n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("%d is not between 0 and %d", n, math.MaxInt32)
		}
		s.deliveryLimit = &n
		return nil
	})
}

// WithMaxRedeliveries bounds how many times one message is requeued by this
// consumer's callbacks (or redelivered, where the broker counts deliveries)
// before it is rejected instead (MAX_REDELIVERIES). 0 means no limit.
func WithMaxRedeliveries(n int) Option {
	return opt("WithMaxRedeliveries", number(n), func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("%d is negative", n)
		}
		s.maxRedeliveries = &n
		return nil
	})
}

// WithMaxBodySize sets the largest delivery body, in bytes, a consumer
// hands to its callback (MAX_BODY_SIZE, default MaxBodySize). A larger
// delivery is rejected without requeue (dead-lettered where the queue has a
// dead-letter exchange), logged and passed to the error handler; with
// WithNoAck(true) it is dropped. amqp091-go reads a delivery's whole body
// before the consumer sees it, so this bounds what the consumer keeps and
// hands on, not what one delivery costs while it is read.
func WithMaxBodySize(n int) Option {
	return opt("WithMaxBodySize", number(n), func(s *settings) error {
		if n < 1 || n > cfgMaxBodySize {
			return fmt.Errorf("%d must be between 1 and %d", n, cfgMaxBodySize)
		}
		s.maxBodySize = n
		return nil
	})
}

// WithDedup makes a consumer acknowledge, without calling its callback, a
// delivery whose message id it handled (its callback returned nil) among the
// last size ids and, when window > 0, no longer than window ago: the
// duplicates that a publisher's republish after a reconnect, or a redelivery
// after the consumer's own reconnect, would hand it again (DEDUP_SIZE,
// DEDUP_WINDOW). Each is counted in Stats().Duplicates. size 0 turns it off
// (the default); memory is bounded by size.
//
// What it cannot cover: a duplicate handled by another consumer of the same
// queue, or by this one before a restart (the ids are in memory only); a
// duplicate arriving after the window or after size newer ids; a copy that
// arrives while the first is still in a callback (AsyncConsumer, or
// WithConcurrency above 1); and messages without a message id, such as the
// Python original's, which are never de-duplicated. The callback must stay
// idempotent where a duplicate matters.
func WithDedup(size int, window time.Duration) Option {
	return opt("WithDedup", fmt.Sprintf("%d, %v", size, window), func(s *settings) error {
		if size < 0 || size > cfgMaxDedupSize {
			return fmt.Errorf("size %d must be between 0 and %d", size, cfgMaxDedupSize)
		}
		if window < 0 {
			return fmt.Errorf("window %v is negative", window)
		}
		s.dedupSet, s.dedupSize, s.dedupWindow = true, size, window
		return nil
	})
}

// WithQueueExpires sets how long a consumer's named, non-durable queue lives
// unused (no consumer, no declaration) before the broker deletes it, with
// the messages it holds (the x-expires argument; QUEUE_EXPIRES, by default
// DefaultQueueExpires for [LogConsumer] and 0 for the others). 0 declares the
// queue without it. It is refused for a durable or server-named queue (the
// latter is deleted with its connection anyway). The broker refuses (406
// PRECONDITION_FAILED, inequivalent arg 'x-expires') to declare an existing
// queue with another expiry, or none where it has one: delete the queue or
// keep the setting it was declared with.
func WithQueueExpires(d time.Duration) Option {
	return opt("WithQueueExpires", d.String(), func(s *settings) error {
		if d < 0 || (d > 0 && d < time.Millisecond) {
			return fmt.Errorf("%v must be 0 or at least 1ms", d)
		}
		s.queueExpires = &d
		return nil
	})
}
