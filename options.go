package omqs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/omqs-go/omqs/internal/transport"
)

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

// ConsumerOption is another name for Option (an alias: the same type, not a
// new one). The consumer constructors are declared with it, as the port's
// API spells them (NewSyncConsumer(opts ...ConsumerOption)), so that their
// signatures read as in the original library; any Option can be passed, and
// one that does not apply to a consumer is refused as for every constructor.
type ConsumerOption = Option

type scope uint8

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

// WithMaxInFlight sets how many published messages may wait for the
// broker's confirm at once (MAX_IN_FLIGHT), for each publishing connection:
// an AsyncPublisher's, a SyncPublisher's (concurrent Publish calls) and each
// of a Manager's built-in workers'. A publish waits while that many are
// unconfirmed.
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

// WithLogWorker replaces the built-in LogMsgWorker with w. When w is a
// LogMsgWorker, or embeds one, NewManager configures that LogMsgWorker as it
// would its own.
func WithLogWorker(w MsgWorker) Option {
	return opt("WithLogWorker", forManager, func(s *settings) error {
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
// configuration section. A publisher reads a publisher section:
// "AsyncPublisher", "SyncPublisher", "AsyncBroadcaster", "SyncBroadcaster",
// "AsyncRouter" or "SyncRouter". A consumer reads a consumer section:
// "LogConsumer" or "EventConsumer". Any other name, or a section of the
// other kind, is an error wrapping ErrInvalidConfig.
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

// WithConcurrency sets how many callbacks a consumer runs at once: an
// AsyncConsumer (DefaultConcurrency by default), a LogMsgConsumer or an
// EventMsgConsumer (1 by default). A SyncConsumer runs one at a time and
// accepts only 1.
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
