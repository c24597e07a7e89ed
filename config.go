package omqs

import "time"

// Config holds every setting of OMQS.cfg, typed. DefaultConfig returns the
// built-in defaults; LoadConfig reads a file over them. Options passed to
// NewManager or a consumer constructor override a Config field by field.
//
// A Config is a plain value: copy it, change it and pass it with WithConfig.
// It is not safe to change a Config while a Manager or consumer built from it
// is running.
type Config struct {
	Global GlobalConfig
	Log    LogConfig

	// Defaults of publishers built directly with NewSyncPublisher or
	// NewAsyncPublisher (sections [AsyncPublisher], [SyncPublisher], and the
	// fanout [AsyncBroadcaster]/[SyncBroadcaster] and direct
	// [AsyncRouter]/[SyncRouter] presets). They never move the Manager's traffic.
	AsyncPublisher   PublisherConfig
	SyncPublisher    PublisherConfig
	AsyncBroadcaster PublisherConfig
	SyncBroadcaster  PublisherConfig
	AsyncRouter      PublisherConfig
	SyncRouter       PublisherConfig

	// Topology of the Manager's built-in workers ([LogWorker], [EventWorker]).
	LogWorker   WorkerConfig
	EventWorker WorkerConfig

	// Defaults of LogMsgConsumer and EventMsgConsumer ([LogConsumer], [EventConsumer]).
	LogConsumer   ConsumerConfig
	EventConsumer ConsumerConfig

	// Source is the file the Config was read from, "" for built-in defaults.
	Source string
	// Warnings lists what LoadConfig accepted but did not use (unknown keys),
	// each naming the file, line and key.
	Warnings []string
}

// GlobalConfig is the [Global] section.
type GlobalConfig struct {
	// MQURL is the broker URL (MQURL). Several URLs separated by commas are
	// tried in turn. "memory://" and "memory://NAME" select the in-process broker.
	MQURL string
	// ReconnectInterval is the wait between connection attempts (RECONNECT_INTERVAL, seconds).
	ReconnectInterval time.Duration
	// ReconnectTimes is how many consecutive attempts fail before a worker
	// spools and a consumer gives up (RECONNECT_TIMES).
	ReconnectTimes int
	// BufferSize is the capacity of each of the Manager's two buffers, in
	// messages (BUFFER_SIZE).
	BufferSize int
	// MaxInFlight is how many published messages an AsyncPublisher may have
	// waiting for the broker's confirm (MAX_IN_FLIGHT).
	MaxInFlight int
}

// LogConfig is the [Log] section; see LogManager.
type LogConfig struct {
	Folder       string // FOLDER: where log files and spool files go
	Level        string // LEVEL: DEBUG, INFO, WARNING, ERROR, FATAL
	Format       string // FORMAT: a Python logging format string
	Type         string // TYPE: "stream" (stderr) or "file"
	Rotation     bool   // ROTATION
	RotationType string // ROTATION_TYPE: "size" or "time"
	Size         int    // SIZE: megabytes, for size rotation
	RotatingTime string // ROTATING_TIME: NS, NM, NH, ND, W0..W6, MD
	BackupCount  int    // BACKUP_COUNT
}

// PublisherConfig is a publisher preset section such as [AsyncPublisher].
type PublisherConfig struct {
	Exchange        string   // EXCHANGE
	ExchangeType    string   // EXCHANGE_TYPE: topic, direct, fanout, headers
	ExchangeDurable bool     // EXCHANGE_DURABLE
	Queue           string   // QUEUE: declared and bound to RoutingKeys ("" for none)
	QueueDurable    bool     // QUEUE_DURABLE
	RoutingKeys     []string // ROUTING_KEY or ROUTING_KEYS, comma-separated; the first is the default key
}

// WorkerConfig is the [LogWorker] or [EventWorker] section: the topology of a
// built-in worker.
type WorkerConfig struct {
	Exchange        string   // EXCHANGE
	ExchangeType    string   // EXCHANGE_TYPE
	ExchangeDurable bool     // EXCHANGE_DURABLE
	Queue           string   // QUEUE: declared and bound to Keys ("" for none)
	QueueDurable    bool     // QUEUE_DURABLE
	QueueType       string   // QUEUE_TYPE: "classic" or "quorum"
	Keys            []string // KEYS: keys Queue is bound to, comma-separated
}

// ConsumerConfig is the [LogConsumer] or [EventConsumer] section.
type ConsumerConfig struct {
	Exchange           string   // EXCHANGE
	ExchangeType       string   // EXCHANGE_TYPE
	ExchangeDurable    bool     // EXCHANGE_DURABLE
	Queue              string   // QUEUE
	QueueDurable       bool     // QUEUE_DURABLE
	QueueType          string   // QUEUE_TYPE: "classic" or "quorum"
	Keys               []string // KEYS: topic patterns the queue is bound to
	Prefetch           int      // PREFETCH: unacknowledged deliveries at once
	DeadLetterExchange string   // DEAD_LETTER_EXCHANGE: declared and set on the queue when not ""
	MaxRedeliveries    int      // MAX_REDELIVERIES: requeues of one message before it is rejected
}

// Built-in defaults that are not names.
const (
	DefaultReconnectInterval = 5 * time.Second
	DefaultReconnectTimes    = 100
	// DefaultBufferSize is the capacity of each Manager buffer. At about 100
	// bytes a message it bounds a lane to a few megabytes while absorbing
	// several seconds of a busy web backend's output during a broker outage.
	DefaultBufferSize = 16384
	// DefaultMaxInFlight bounds unconfirmed publishes of an AsyncPublisher.
	DefaultMaxInFlight     = 1024
	DefaultPrefetch        = 32
	DefaultMaxRedeliveries = 5
	DefaultLogFormat       = "%(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s"
)

// DefaultConfig returns the built-in defaults: the original OMQS.cfg's values,
// with a localhost broker URL.
func DefaultConfig() *Config {
	pub := func(prefix, kind string) PublisherConfig {
		return PublisherConfig{
			Exchange:        "omqs.default." + prefix + ".exchange",
			ExchangeType:    kind,
			ExchangeDurable: true,
			Queue:           "omqs.default." + prefix + ".queue",
			QueueDurable:    true,
			RoutingKeys:     []string{"omqs.default." + prefix + ".key"},
		}
	}
	return &Config{
		Global: GlobalConfig{
			MQURL:             DefaultURL,
			ReconnectInterval: DefaultReconnectInterval,
			ReconnectTimes:    DefaultReconnectTimes,
			BufferSize:        DefaultBufferSize,
			MaxInFlight:       DefaultMaxInFlight,
		},
		Log: LogConfig{
			Folder:       "./log/",
			Level:        "INFO",
			Format:       DefaultLogFormat,
			Type:         "stream",
			Rotation:     true,
			RotationType: "size",
			Size:         5,
			RotatingTime: "MD",
			BackupCount:  10,
		},
		AsyncPublisher:   pub("asyncPublisher", "topic"),
		SyncPublisher:    pub("syncPublisher", "topic"),
		AsyncBroadcaster: pub("asyncBroadcaster", "fanout"),
		SyncBroadcaster:  pub("syncBroadcaster", "fanout"),
		AsyncRouter:      pub("asyncRouter", "direct"),
		SyncRouter:       pub("syncRouter", "direct"),
		LogWorker: WorkerConfig{
			Exchange:        LogExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			QueueDurable:    true,
			QueueType:       "classic",
		},
		EventWorker: WorkerConfig{
			Exchange:        EventExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           EventQueue,
			QueueDurable:    true,
			QueueType:       "classic",
			Keys:            []string{DefaultEventKey},
		},
		LogConsumer: ConsumerConfig{
			Exchange:        LogExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           LogQueue,
			QueueDurable:    false,
			QueueType:       "classic",
			Keys:            []string{DefaultLogKey},
			Prefetch:        DefaultPrefetch,
			MaxRedeliveries: DefaultMaxRedeliveries,
		},
		EventConsumer: ConsumerConfig{
			Exchange:        EventExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           EventQueue,
			QueueDurable:    true,
			QueueType:       "classic",
			Keys:            []string{DefaultEventKey},
			Prefetch:        DefaultPrefetch,
			MaxRedeliveries: DefaultMaxRedeliveries,
		},
	}
}
