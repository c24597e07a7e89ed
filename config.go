package omqs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/omqs-go/omqs/internal/pyfmt"
	"github.com/omqs-go/omqs/internal/pyini"
	"github.com/omqs-go/omqs/internal/rotate"
	"github.com/omqs-go/omqs/internal/safefile"
	"github.com/omqs-go/omqs/internal/textdist"
	"github.com/omqs-go/omqs/internal/transport"
)

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
	// Warnings lists what LoadConfig accepted but did not use or will not be
	// used as written, each naming the file, line and key: unknown keys, keys
	// set twice, and MQURL's pika parameters that have no equivalent or a
	// heartbeat the broker caps. WithURL adds the warnings of its URL.
	// LoadConfig also lists declarations the broker would refuse with 406
	// PRECONDITION_FAILED beside the Python original on its fixed names
	// (QUEUE_TYPE=quorum, a dead-letter exchange or another durability on
	// "omqs.queue.event" or "omqs.queue.log") or beside another section of
	// the file on the same queue.
	Warnings []string

	// origins maps "Section.KEY" (folded) to the "file:line" that set it;
	// filled by LoadConfig, read by Origin.
	origins map[string]string
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
	// MaxInFlight is how many published messages each publishing
	// connection (an AsyncPublisher, a SyncPublisher, each built-in worker)
	// may have waiting for the broker's confirm (MAX_IN_FLIGHT).
	MaxInFlight int
	// BufferBytes bounds the message bodies each of the Manager's two lanes
	// holds, in bytes (BUFFER_BYTES): what Send* accepted and the broker has
	// not yet confirmed, nor the spool taken. A body larger than it is
	// refused with ErrInvalidMessage.
	BufferBytes int
	// MaxInFlightBytes bounds the bodies a publisher (or a Manager's worker)
	// holds unconfirmed, in bytes (MAX_IN_FLIGHT_BYTES); one message larger
	// than it is still published, alone.
	MaxInFlightBytes int
	// Journal is the folder of the Manager's crash-safe journal (JOURNAL):
	// when set, Send* writes each message to a memory-mapped file under
	// Journal/log or Journal/event before it returns, so that a crash of the
	// process loses nothing Send* accepted. "" (the default) keeps messages
	// in memory only. See WithJournal.
	Journal string
	// JournalSync is when the journal is written to the disk, that is what
	// a power loss can lose (JOURNAL_SYNC): "none" (the default: the
	// kernel's write-back), "interval:<ms>" or "every" (each message).
	JournalSync string
	// JournalMaxBytes is each lane journal's quota of unconfirmed bytes
	// (JOURNAL_MAX_BYTES; 0 means 1 GiB): past it Send* returns
	// ErrBufferFull.
	JournalMaxBytes int
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

// QueueConfig describes a queue the way the broker compares two
// declarations of it: the worker sections and the consumer sections hold
// its fields (WorkerConfig.QueueConfig and ConsumerConfig.QueueConfig return
// it), so that a Manager and a consumer that name the same queue declare it
// with the same settings (the broker refuses a second declaration that
// differs with 406 PRECONDITION_FAILED). Its fields are read from the same
// keys in every section that has them.
type QueueConfig struct {
	Queue        string // QUEUE: declared and bound to the section's keys ("" for none, or a server-named queue for a consumer)
	QueueDurable bool   // QUEUE_DURABLE
	QueueType    string // QUEUE_TYPE: "classic" or "quorum" (x-queue-type)
	// DeadLetterExchange is a fanout exchange, declared durable, that
	// receives the queue's rejected and expired messages
	// (DEAD_LETTER_EXCHANGE, x-dead-letter-exchange); "" for none.
	DeadLetterExchange string
	// MessageTTL is how long a message may wait in the queue before it
	// expires (and is dead-lettered, with a DeadLetterExchange):
	// MESSAGE_TTL, x-message-ttl, whole milliseconds. 0 for no limit.
	MessageTTL time.Duration
	// MaxLength is how many messages the queue holds; beyond that the
	// broker drops (or dead-letters) the oldest: MAX_LENGTH, x-max-length.
	// 0 for no limit.
	MaxLength int
	// DeliveryLimit is a quorum queue's delivery limit (DELIVERY_LIMIT,
	// x-delivery-limit): the broker dead-letters a message delivered that
	// many times more without an acknowledgement, even one the client
	// cannot read. 0 for none; it needs QueueType "quorum".
	DeliveryLimit int
}

// WorkerConfig is the [LogWorker] or [EventWorker] section: the topology of a
// built-in worker.
type WorkerConfig struct {
	Exchange           string        // EXCHANGE
	ExchangeType       string        // EXCHANGE_TYPE
	ExchangeDurable    bool          // EXCHANGE_DURABLE
	Queue              string        // QUEUE: declared and bound to the keys ("" for none, or a server-named queue for a consumer)
	QueueDurable       bool          // QUEUE_DURABLE
	QueueType          string        // QUEUE_TYPE: "classic" or "quorum"
	DeadLetterExchange string        // DEAD_LETTER_EXCHANGE: a durable fanout exchange set as the queue's x-dead-letter-exchange ("" for none)
	MessageTTL         time.Duration // MESSAGE_TTL: x-message-ttl, whole milliseconds (0 for none)
	MaxLength          int           // MAX_LENGTH: x-max-length (0 for none)
	DeliveryLimit      int           // DELIVERY_LIMIT: a quorum queue's x-delivery-limit (0 for none)
	Keys               []string      // KEYS: keys Queue is bound to, comma-separated
}

// ConsumerConfig is the [LogConsumer] or [EventConsumer] section.
type ConsumerConfig struct {
	Exchange           string        // EXCHANGE
	ExchangeType       string        // EXCHANGE_TYPE
	ExchangeDurable    bool          // EXCHANGE_DURABLE
	Queue              string        // QUEUE: declared and bound to the keys ("" for none, or a server-named queue for a consumer)
	QueueDurable       bool          // QUEUE_DURABLE
	QueueType          string        // QUEUE_TYPE: "classic" or "quorum"
	DeadLetterExchange string        // DEAD_LETTER_EXCHANGE: a durable fanout exchange set as the queue's x-dead-letter-exchange ("" for none)
	MessageTTL         time.Duration // MESSAGE_TTL: x-message-ttl, whole milliseconds (0 for none)
	MaxLength          int           // MAX_LENGTH: x-max-length (0 for none)
	DeliveryLimit      int           // DELIVERY_LIMIT: a quorum queue's x-delivery-limit (0 for none)
	Keys               []string      // KEYS: topic patterns the queue is bound to
	Prefetch           int           // PREFETCH: unacknowledged deliveries at once
	MaxRedeliveries    int           // MAX_REDELIVERIES: requeues and retries of one message before it is rejected
	MaxBodySize        int           // MAX_BODY_SIZE: larger deliveries are rejected without reaching the callback
	QueueExpires       time.Duration // QUEUE_EXPIRES: a named, non-durable queue unused this long is deleted (x-expires); 0 for never
	DedupSize          int           // DEDUP_SIZE: message ids remembered to drop duplicates; 0 turns de-duplication off
	DedupWindow        time.Duration // DEDUP_WINDOW: how long an id is remembered; 0 for as long as DEDUP_SIZE allows
}

// Built-in defaults that are not names.
const (
	DefaultReconnectInterval = 5 * time.Second
	DefaultReconnectTimes    = 100
	// DefaultBufferSize is the capacity of each Manager buffer. At about 100
	// bytes a message it bounds a lane to a few megabytes while absorbing
	// several seconds of a busy web backend's output during a broker outage.
	DefaultBufferSize = 16384
	// DefaultMaxInFlight bounds the unconfirmed publishes of each
	// publishing connection.
	DefaultMaxInFlight = 8192
	// DefaultBufferBytes bounds the message bodies of each Manager lane:
	// 64 MiB, some 16,000 messages of 4 KiB, while a broker outage lasts.
	DefaultBufferBytes = 64 << 20
	// DefaultMaxInFlightBytes bounds the unconfirmed bodies a publisher holds.
	DefaultMaxInFlightBytes = 64 << 20
	DefaultPrefetch         = 32
	// DefaultQueueExpires is how long a LogMsgConsumer's named, non-durable
	// queue outlives its last consumer before the broker deletes it.
	DefaultQueueExpires    = 30 * time.Minute
	DefaultMaxRedeliveries = 5
	DefaultLogFormat       = "%(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s"
)

// DefaultConfig returns the built-in defaults: the original OMQS.cfg's values,
// with a localhost broker URL.
func DefaultConfig() *Config {
	// The publisher presets are not durable, as the Python original declared
	// them: a Go and a Python publisher left to their defaults meet on these
	// names, and the broker refuses a second declaration that differs.
	pub := func(prefix, kind string) PublisherConfig {
		return PublisherConfig{
			Exchange:        "omqs.default." + prefix + ".exchange",
			ExchangeType:    kind,
			ExchangeDurable: false,
			Queue:           "omqs.default." + prefix + ".queue",
			QueueDurable:    false,
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
			BufferBytes:       DefaultBufferBytes,
			MaxInFlightBytes:  DefaultMaxInFlightBytes,
			JournalSync:       "none",
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
			QueueDurable:    true, QueueType: "classic",
		},
		EventWorker: WorkerConfig{
			Exchange:        EventExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           EventQueue, QueueDurable: true, QueueType: "classic",
			Keys: []string{DefaultEventKey},
		},
		LogConsumer: ConsumerConfig{
			Exchange:        LogExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           LogQueue, QueueDurable: false, QueueType: "classic",
			Keys:            []string{DefaultLogKey},
			Prefetch:        DefaultPrefetch,
			MaxRedeliveries: DefaultMaxRedeliveries,
			MaxBodySize:     MaxBodySize,
			QueueExpires:    DefaultQueueExpires,
		},
		EventConsumer: ConsumerConfig{
			Exchange:        EventExchange,
			ExchangeType:    "topic",
			ExchangeDurable: true,
			Queue:           EventQueue, QueueDurable: true, QueueType: "classic",
			Keys:            []string{DefaultEventKey},
			Prefetch:        DefaultPrefetch,
			MaxRedeliveries: DefaultMaxRedeliveries,
			MaxBodySize:     MaxBodySize,
		},
	}
}

// Names of the configuration file and of the environment variable that points
// at one.
const (
	cfgFileName = "OMQS.cfg"
	cfgEnvVar   = "OMQS_CONFIG"
)

// LoadConfig reads the configuration file at path over DefaultConfig: a
// setting the file leaves out keeps its default. Source is set to path.
//
// The file has the layout of the original OMQS.cfg (see the OMQS.cfg at the
// root of this module) and is read as Python's ConfigParser read it:
//
//   - section and key names match in any case; "KEY = value" and
//     "KEY: value" are both accepted;
//   - only whole lines starting with ';' or '#' are comments: a ';' or '#'
//     inside a value is part of it;
//   - a line indented deeper than its key continues the key's value, up
//     to a blank line;
//   - values are %-interpolated: "%%" is a literal '%' (so a vhost "/" is
//     written %%2F) and "%(KEY)s" is the value of another key of the same
//     section or of a [DEFAULT] section, which also supplies any key a
//     section leaves out. Any other '%' is an error.
//
// Integers are whole numbers; booleans are 1, yes, true, on, 0, no, false or
// off in any case; RECONNECT_INTERVAL is in seconds (5, 0.5) or a Go duration
// (500ms); KEYS and ROUTING_KEY (or ROUTING_KEYS, not both) are
// comma-separated lists. An empty value clears a text or list setting and is
// an error for any other. FORMAT may be wrapped as ('...'), ("..."), '...' or
// "...", as the original's tutorial wrote it: the wrapping is removed; what
// remains must be a format LogManager can use.
// Enumerations (LEVEL, TYPE, ROTATION_TYPE, ROTATING_TIME, EXCHANGE_TYPE,
// QUEUE_TYPE) match in any case and are stored in the case DefaultConfig
// uses.
//
// Errors wrap ErrInvalidConfig and name the file, the line, the key and the
// value, with any password in MQURL replaced by "xxxxx". A missing file is an
// error that also matches fs.ErrNotExist. A path that is not a regular file
// (a directory, a named pipe, a device such as /dev/zero) or a file larger
// than 64 KiB is refused without reading it. An unknown section is an error;
// an unknown key is not, it is listed in Config.Warnings. So are MQURL's
// pika 0.10 query parameters that have no equivalent here, and a heartbeat
// above the broker's (see the README's MQURL section). LoadConfig does not
// connect to the broker.
func LoadConfig(path string) (*Config, error) {
	// Only a regular file is read, and no more than pyini.MaxSize of it:
	// /dev/zero or a named pipe is refused at once.
	data, err := safefile.Read(path, pyini.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return parseConfig(path, data)
}

// resolveConfig finds the configuration to use when the caller gave none: the
// file named by $OMQS_CONFIG if that is set and not empty (the file must then
// exist), else ./OMQS.cfg if it exists, else DefaultConfig.
// urlEnvVar names the environment variable that overrides MQURL.
const urlEnvVar = "OMQS_MQURL"

// applyURLEnv sets MQURL from $OMQS_MQURL, when it is set, with its warnings
// and its origin.
func (c *Config) applyURLEnv() error {
	v := os.Getenv(urlEnvVar)
	if v == "" {
		return nil
	}
	_, warns, err := transport.ParseMQURL(v)
	if err != nil {
		return fmt.Errorf("%w: $%s: %s", ErrInvalidConfig, urlEnvVar, transport.Redact(err.Error()))
	}
	c.Global.MQURL = v
	for _, w := range warns {
		c.Warnings = append(c.Warnings, "$"+urlEnvVar+": "+w)
	}
	if c.origins == nil {
		c.origins = map[string]string{}
	}
	c.origins[cfgOriginKey("Global", "MQURL")] = "$" + urlEnvVar
	return nil
}

func resolveConfig() (*Config, error) {
	if path := os.Getenv(cfgEnvVar); path != "" {
		c, err := LoadConfig(path)
		if err != nil {
			return nil, fmt.Errorf("%w (named by $%s)", err, cfgEnvVar)
		}
		return c, nil
	}
	if _, err := os.Stat(cfgFileName); err == nil {
		return LoadConfig(cfgFileName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return DefaultConfig(), nil
}

// parseConfig reads data, the content of the file name, over DefaultConfig.
// See LoadConfig.
func parseConfig(name string, data []byte) (*Config, error) {
	f, err := pyini.Parse(data)
	if err != nil {
		var se *pyini.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: %s:%d: %s", ErrInvalidConfig, name, se.Line, se.Msg)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, name, err)
	}
	c := DefaultConfig()
	c.Source = name
	ld := &cfgLoader{name: name, file: f, def: f.Section("DEFAULT"), used: map[*pyini.Key]bool{}, origins: map[string]string{}}
	if err := ld.load(c); err != nil {
		return nil, err
	}
	c.origins = ld.origins
	if err := c.checkSharedQueueTypes(); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, name, strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": "))
	}
	for _, w := range c.compatWarnings() {
		c.Warnings = append(c.Warnings, name+": "+w)
	}
	return c, nil
}

// cfgLoader applies a parsed file to a Config.
type cfgLoader struct {
	name string
	file *pyini.File
	def  *pyini.Section // [DEFAULT], or nil
	// used holds the keys that set a field or that a %(KEY)s referred to.
	used     map[*pyini.Key]bool
	warnings []cfgWarning
	section  string            // the section apply works on
	origins  map[string]string // see Config.origins
}

type cfgWarning struct {
	line int
	text string
}

func (ld *cfgLoader) load(c *Config) error {
	sections := c.sections()
	for _, s := range ld.file.Sections {
		if s == ld.def || cfgFindSection(sections, s.Name) != nil {
			continue
		}
		names := make([]string, len(sections))
		for i, cs := range sections {
			names[i] = cs.name
		}
		return fmt.Errorf("%w: %s:%d: unknown section [%s] (the sections are %s, and DEFAULT)",
			ErrInvalidConfig, ld.name, s.Line, cfgClip(s.Name), strings.Join(names, ", "))
	}
	for _, cs := range sections {
		s := ld.file.Section(cs.name)
		ld.section = cs.name
		for _, fd := range cs.fields {
			if err := ld.apply(cs.name, s, fd); err != nil {
				return err
			}
		}
	}
	ld.warn(sections)
	sort.SliceStable(ld.warnings, func(i, j int) bool { return ld.warnings[i].line < ld.warnings[j].line })
	for _, w := range ld.warnings {
		c.Warnings = append(c.Warnings, w.text)
	}
	return nil
}

// apply sets one field of the section named section from s (nil if the file
// has none) or from [DEFAULT].
func (ld *cfgLoader) apply(section string, s *pyini.Section, fd cfgField) error {
	k, name, err := ld.pick(s, fd)
	if k == nil || err != nil {
		return err
	}
	ld.used[k] = true
	ld.origins[cfgOriginKey(ld.section, fd.key)] = fmt.Sprintf("%s:%d", ld.name, k.Line)
	v, err := pyini.Interpolate(k.Value, ld.lookup(s))
	if err != nil {
		return ld.errorf(k, name, "%s: %v", fd.quote(k.Value), err)
	}
	if !fd.list && strings.Contains(v, "\n") {
		return ld.errorf(k, name, "%s continues on an indented line; only lists (KEYS, ROUTING_KEY) may span lines", fd.quote(v))
	}
	if err := fd.set(v); err != nil {
		return ld.errorf(k, name, "%v", err)
	}
	if err := fd.check(); err != nil {
		return ld.errorf(k, name, "%v", err)
	}
	if fd.warnings != nil {
		for _, w := range fd.warnings() {
			ld.warnings = append(ld.warnings, cfgWarning{k.Line, fmt.Sprintf("%s:%d: [%s] %s: %s", ld.name, k.Line, section, name, w)})
		}
	}
	return nil
}

// pick finds the key that sets fd: the section's own, else [DEFAULT]'s. It
// returns the name (fd.key or fd.alias) the key matched.
func (ld *cfgLoader) pick(s *pyini.Section, fd cfgField) (*pyini.Key, string, error) {
	for _, sec := range []*pyini.Section{s, ld.def} {
		k := sec.Key(fd.key)
		if fd.alias == "" {
			if k != nil {
				return k, fd.key, nil
			}
			continue
		}
		a := sec.Key(fd.alias)
		switch {
		case k != nil && a != nil:
			first, second, secondName := k, a, fd.alias
			if a.Line < k.Line {
				first, second, secondName = a, k, fd.key
			}
			ld.used[first], ld.used[second] = true, true
			return nil, "", ld.errorf(second, secondName, "%s is also set (line %d); set only one of %s and %s",
				strings.ToUpper(first.Name), first.Line, fd.key, fd.alias)
		case k != nil:
			return k, fd.key, nil
		case a != nil:
			return a, fd.alias, nil
		}
	}
	return nil, "", nil
}

// lookup resolves %(name)s for a value read in section s, as Python's
// ConfigParser does: the section's keys, then [DEFAULT]'s.
func (ld *cfgLoader) lookup(s *pyini.Section) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, sec := range []*pyini.Section{s, ld.def} {
			if k := sec.Key(name); k != nil {
				ld.used[k] = true
				return k.Value, true
			}
		}
		return "", false
	}
}

func (ld *cfgLoader) errorf(k *pyini.Key, key, format string, args ...any) error {
	return fmt.Errorf("%w: %s:%d: %s: %s", ErrInvalidConfig, ld.name, k.Line, key, fmt.Sprintf(format, args...))
}

// warn lists unknown keys (those no field reads and no %(KEY)s refers to)
// and keys set twice in one section.
func (ld *cfgLoader) warn(sections []cfgSection) {
	for _, s := range ld.file.Sections {
		cs := cfgFindSection(sections, s.Name)
		secName := "DEFAULT"
		if cs != nil {
			secName = cs.name
		}
		for _, k := range s.Keys {
			for _, line := range k.Overrides {
				ld.warnings = append(ld.warnings, cfgWarning{line, fmt.Sprintf("%s:%d: [%s] %s is set again on line %d, which wins",
					ld.name, line, secName, cfgClip(strings.ToUpper(k.Name)), k.Line)})
			}
			known := false
			if cs != nil {
				known = cs.has(k.Name)
			} else {
				for i := range sections {
					known = known || sections[i].has(k.Name)
				}
			}
			if !known && !ld.used[k] {
				hint := ""
				if near := cfgClosestKey(k.Name, cs, sections); near != "" {
					hint = "; did you mean " + near + "?"
				}
				ld.warnings = append(ld.warnings, cfgWarning{k.Line, fmt.Sprintf("%s:%d: unknown key [%s] %s (ignored)%s",
					ld.name, k.Line, secName, cfgClip(k.Name), hint)})
			}
		}
	}
}

// cfgSection is one section of OMQS.cfg bound to the fields of a Config.
type cfgSection struct {
	name   string
	fields []cfgField
}

func (cs *cfgSection) has(key string) bool {
	for _, fd := range cs.fields {
		if pyini.Fold(key) == pyini.Fold(fd.key) || fd.alias != "" && pyini.Fold(key) == pyini.Fold(fd.alias) {
			return true
		}
	}
	return false
}

// cfgClosestKey returns the known key of cs (of every section when cs is
// nil) closest to key in edit distance, when it is close enough to be a typo
// of it (at most a third of its letters differ), or "".
func cfgClosestKey(key string, cs *cfgSection, sections []cfgSection) string {
	in := sections
	if cs != nil {
		in = []cfgSection{*cs}
	}
	key = strings.ToUpper(key)
	best, bestD := "", len(key)/3+1
	for _, sec := range in {
		for _, fd := range sec.fields {
			for _, name := range []string{fd.key, fd.alias} {
				if name == "" {
					continue
				}
				if d := textdist.Distance(key, strings.ToUpper(name)); d < bestD {
					best, bestD = name, d
				}
			}
		}
	}
	return best
}

func cfgFindSection(sections []cfgSection, name string) *cfgSection {
	for i := range sections {
		if pyini.Fold(sections[i].name) == pyini.Fold(name) {
			return &sections[i]
		}
	}
	return nil
}

// cfgField binds one key of OMQS.cfg to a field of a Config. Messages of set
// and check name the value, never the key.
type cfgField struct {
	key    string // INI name
	alias  string // another accepted name, or ""
	list   bool   // a list: may span lines
	secret bool   // may hold a password: redact it in messages and dumps
	set    func(v string) error
	check  func() error
	canon  func()        // writes an enumeration in the case it is stored in; nil for others
	text   func() string // the value as OMQS.cfg would write it, before %-escaping
	value  func() slog.Value
	// warnings, if not nil, returns what the last successful check found
	// acceptable but worth telling (LoadConfig lists it in Config.Warnings).
	warnings func() []string
}

// quote returns v quoted for a message, its password hidden and its length
// bounded.
func (fd cfgField) quote(v string) string {
	if fd.secret {
		v = transport.Redact(v)
	}
	return strconv.Quote(cfgClip(v))
}

// cfgClip shortens s for a message.
func cfgClip(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// sections binds every section and key of OMQS.cfg to c's fields, in the
// order of the original file.
func (c *Config) sections() []cfgSection {
	pub := func(name string, p *PublisherConfig) cfgSection {
		rk := cfgList("ROUTING_KEY", &p.RoutingKeys)
		rk.alias = "ROUTING_KEYS"
		return cfgSection{name, []cfgField{
			cfgName("EXCHANGE", &p.Exchange),
			cfgEnum("EXCHANGE_TYPE", &p.ExchangeType, strings.ToLower, cfgExchangeTypes...),
			cfgBool("EXCHANGE_DURABLE", &p.ExchangeDurable),
			cfgName("QUEUE", &p.Queue),
			cfgBool("QUEUE_DURABLE", &p.QueueDurable),
			rk,
		}}
	}
	worker := func(name string, w *WorkerConfig) cfgSection {
		return cfgSection{name, cfgJoin(
			[]cfgField{
				cfgName("EXCHANGE", &w.Exchange),
				cfgEnum("EXCHANGE_TYPE", &w.ExchangeType, strings.ToLower, cfgExchangeTypes...),
				cfgBool("EXCHANGE_DURABLE", &w.ExchangeDurable),
			},
			cfgQueueFields(w.queueRefs()),
			[]cfgField{cfgList("KEYS", &w.Keys)},
		)}
	}
	consumer := func(name string, k *ConsumerConfig) cfgSection {
		return cfgSection{name, cfgJoin(
			[]cfgField{
				cfgName("EXCHANGE", &k.Exchange),
				cfgEnum("EXCHANGE_TYPE", &k.ExchangeType, strings.ToLower, cfgExchangeTypes...),
				cfgBool("EXCHANGE_DURABLE", &k.ExchangeDurable),
			},
			cfgQueueFields(k.queueRefs()),
			[]cfgField{
				cfgList("KEYS", &k.Keys),
				cfgInt("PREFETCH", &k.Prefetch, 0, math.MaxUint16),
				cfgInt("MAX_REDELIVERIES", &k.MaxRedeliveries, 0, math.MaxInt),
				cfgInt("MAX_BODY_SIZE", &k.MaxBodySize, 1, cfgMaxBodySize),
				cfgDuration("QUEUE_EXPIRES", &k.QueueExpires),
				cfgInt("DEDUP_SIZE", &k.DedupSize, 0, cfgMaxDedupSize),
				cfgDuration("DEDUP_WINDOW", &k.DedupWindow),
			},
		)}
	}
	g := &c.Global
	return []cfgSection{
		{"Global", []cfgField{
			cfgURL("MQURL", &g.MQURL),
			cfgDuration("RECONNECT_INTERVAL", &g.ReconnectInterval),
			cfgInt("RECONNECT_TIMES", &g.ReconnectTimes, 0, math.MaxInt),
			cfgInt("BUFFER_SIZE", &g.BufferSize, 1, cfgMaxBufferSize),
			cfgInt("MAX_IN_FLIGHT", &g.MaxInFlight, 1, cfgMaxInFlight),
			cfgInt("BUFFER_BYTES", &g.BufferBytes, 1, math.MaxInt),
			cfgInt("MAX_IN_FLIGHT_BYTES", &g.MaxInFlightBytes, 1, math.MaxInt),
			cfgText("JOURNAL", &g.Journal, nil),
			cfgJournalSync("JOURNAL_SYNC", &g.JournalSync),
			cfgInt("JOURNAL_MAX_BYTES", &g.JournalMaxBytes, 0, math.MaxInt),
		}},
		cfgLogSection(&c.Log),
		pub("AsyncBroadcaster", &c.AsyncBroadcaster),
		pub("SyncBroadcaster", &c.SyncBroadcaster),
		pub("AsyncRouter", &c.AsyncRouter),
		pub("SyncRouter", &c.SyncRouter),
		pub("AsyncPublisher", &c.AsyncPublisher),
		pub("SyncPublisher", &c.SyncPublisher),
		worker("LogWorker", &c.LogWorker),
		worker("EventWorker", &c.EventWorker),
		consumer("LogConsumer", &c.LogConsumer),
		consumer("EventConsumer", &c.EventConsumer),
	}
}

// cfgQueueFields binds the keys that describe a queue to q's fields: the
// one set of keys the worker and the consumer sections share.
func cfgQueueFields(r queueRefs) []cfgField {
	return []cfgField{
		cfgName("QUEUE", r.queue),
		cfgBool("QUEUE_DURABLE", r.durable),
		cfgEnum("QUEUE_TYPE", r.kind, strings.ToLower, cfgQueueTypes...),
		cfgName("DEAD_LETTER_EXCHANGE", r.deadLetter),
		cfgMillis("MESSAGE_TTL", r.ttl),
		cfgInt("MAX_LENGTH", r.maxLength, 0, math.MaxInt32),
		cfgInt("DELIVERY_LIMIT", r.deliveryLimit, 0, math.MaxInt32),
	}
}

// queueRefs points at the fields of a queue's description, wherever they
// are held: the one set of keys the loader reads for every section.
type queueRefs struct {
	queue, kind, deadLetter  *string
	durable                  *bool
	ttl                      *time.Duration
	maxLength, deliveryLimit *int
}

func (q *QueueConfig) refs() queueRefs {
	return queueRefs{&q.Queue, &q.QueueType, &q.DeadLetterExchange, &q.QueueDurable, &q.MessageTTL, &q.MaxLength, &q.DeliveryLimit}
}

func (w *WorkerConfig) queueRefs() queueRefs {
	return queueRefs{&w.Queue, &w.QueueType, &w.DeadLetterExchange, &w.QueueDurable, &w.MessageTTL, &w.MaxLength, &w.DeliveryLimit}
}

func (c *ConsumerConfig) queueRefs() queueRefs {
	return queueRefs{&c.Queue, &c.QueueType, &c.DeadLetterExchange, &c.QueueDurable, &c.MessageTTL, &c.MaxLength, &c.DeliveryLimit}
}

// QueueConfig returns the description of the section's queue.
func (w WorkerConfig) QueueConfig() QueueConfig { return w.queueRefs().get() }

// SetQueueConfig sets every setting of the section's queue from q.
func (w *WorkerConfig) SetQueueConfig(q QueueConfig) { w.queueRefs().set(q) }

// QueueConfig returns the description of the section's queue.
func (c ConsumerConfig) QueueConfig() QueueConfig { return c.queueRefs().get() }

// SetQueueConfig sets every setting of the section's queue from q.
func (c *ConsumerConfig) SetQueueConfig(q QueueConfig) { c.queueRefs().set(q) }

func (r queueRefs) get() QueueConfig {
	return QueueConfig{Queue: *r.queue, QueueDurable: *r.durable, QueueType: *r.kind, DeadLetterExchange: *r.deadLetter,
		MessageTTL: *r.ttl, MaxLength: *r.maxLength, DeliveryLimit: *r.deliveryLimit}
}

func (r queueRefs) set(q QueueConfig) {
	*r.queue, *r.durable, *r.kind, *r.deadLetter = q.Queue, q.QueueDurable, q.QueueType, q.DeadLetterExchange
	*r.ttl, *r.maxLength, *r.deliveryLimit = q.MessageTTL, q.MaxLength, q.DeliveryLimit
}

func cfgJoin(lists ...[]cfgField) []cfgField {
	var all []cfgField
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

// cfgMillis is a duration (as cfgDuration reads it) the broker takes in
// whole milliseconds, at most 2^32-1 of them; 0 means none.
func cfgMillis(key string, p *time.Duration) cfgField {
	fd := cfgDuration(key, p)
	fd.check = func() error {
		switch {
		case *p < 0:
			return fmt.Errorf("%v must not be negative", *p)
		case *p%time.Millisecond != 0:
			return fmt.Errorf("%v is not a whole number of milliseconds", *p)
		case *p/time.Millisecond > math.MaxUint32:
			return fmt.Errorf("%v is longer than %d milliseconds", *p, uint32(math.MaxUint32))
		}
		return nil
	}
	return fd
}

// cfgLogSection binds the keys of [Log] to l's fields. NewLogManager checks
// a LogConfig with it too.
func cfgLogSection(l *LogConfig) cfgSection {
	return cfgSection{"Log", []cfgField{
		cfgText("FOLDER", &l.Folder, nil),
		cfgEnum("LEVEL", &l.Level, strings.ToUpper, "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "FATAL", "CRITICAL"),
		cfgFormat("FORMAT", &l.Format),
		cfgEnum("TYPE", &l.Type, strings.ToLower, "stream", "file"),
		cfgBool("ROTATION", &l.Rotation),
		cfgEnum("ROTATION_TYPE", &l.RotationType, strings.ToLower, "size", "time"),
		cfgInt("SIZE", &l.Size, 1, cfgMaxLogSize),
		cfgRotatingTime("ROTATING_TIME", &l.RotatingTime),
		cfgInt("BACKUP_COUNT", &l.BackupCount, 0, math.MaxInt),
	}}
}

// Upper bounds that keep a typing slip from exhausting memory.
const (
	cfgMaxBufferSize = 1 << 24       // messages per Manager buffer
	cfgMaxInFlight   = 1 << 20       // unconfirmed publishes
	cfgMaxLogSize    = 1 << 20       // megabytes: a 1 TiB log file
	cfgMaxBodySize   = math.MaxInt32 // bytes of one delivery; RabbitMQ's own cap is 512 MiB
	cfgMaxDedupSize  = 1 << 24       // message ids a consumer remembers
)

var (
	cfgExchangeTypes = []string{"topic", "direct", "fanout", "headers"}
	cfgQueueTypes    = []string{"classic", "quorum"}
)

// cfgText is a free text setting; unwrap, if not nil, rewrites a value read
// from a file.
func cfgText(key string, p *string, unwrap func(string) string) cfgField {
	return cfgField{
		key: key,
		set: func(v string) error {
			if unwrap != nil {
				v = unwrap(v)
			}
			*p = v
			return nil
		},
		check: func() error { return nil },
		text:  func() string { return *p },
		value: func() slog.Value { return slog.StringValue(*p) },
	}
}

// cfgName is an exchange or queue name ("" for none).
func cfgName(key string, p *string) cfgField {
	fd := cfgText(key, p, nil)
	fd.check = func() error { return cfgCheckName(*p) }
	return fd
}

// cfgCheckName checks what AMQP can carry as a name or a routing key.
func cfgCheckName(s string) error {
	if len(s) > MaxKeyLen {
		return fmt.Errorf("%q is longer than %d bytes", cfgClip(s), MaxKeyLen)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q contains a control character", cfgClip(s))
		}
	}
	return nil
}

// cfgList is a comma-separated list of routing keys or patterns.
func cfgList(key string, p *[]string) cfgField {
	return cfgField{
		key:  key,
		list: true,
		set: func(v string) error {
			var items []string
			for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' }) {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
			*p = items
			return nil
		},
		check: func() error {
			for _, item := range *p {
				if err := cfgCheckName(item); err != nil {
					return err
				}
			}
			return nil
		},
		text:  func() string { return strings.Join(*p, ", ") },
		value: func() slog.Value { return slog.StringValue(strings.Join(*p, ", ")) },
	}
}

func cfgInt(key string, p *int, lo, hi int) cfgField {
	return cfgField{
		key: key,
		set: func(v string) error {
			if v == "" {
				return errors.New("empty value; want a whole number")
			}
			n, err := strconv.Atoi(v)
			switch {
			case errors.Is(err, strconv.ErrRange):
				return fmt.Errorf("%q is out of range", cfgClip(v))
			case err != nil:
				return fmt.Errorf("%q is not a whole number", cfgClip(v))
			}
			*p = n
			return nil
		},
		check: func() error {
			switch {
			case *p < lo:
				return fmt.Errorf("%d must be at least %d", *p, lo)
			case *p > hi:
				return fmt.Errorf("%d must be at most %d", *p, hi)
			}
			return nil
		},
		text:  func() string { return strconv.Itoa(*p) },
		value: func() slog.Value { return slog.IntValue(*p) },
	}
}

// cfgBool reads a boolean as Python's ConfigParser.getboolean does.
func cfgBool(key string, p *bool) cfgField {
	return cfgField{
		key: key,
		set: func(v string) error {
			switch strings.ToLower(v) {
			case "1", "yes", "true", "on":
				*p = true
			case "0", "no", "false", "off":
				*p = false
			case "":
				return errors.New("empty value; want a boolean (1, yes, true, on, 0, no, false or off)")
			default:
				return fmt.Errorf("%q is not a boolean (want 1, yes, true, on, 0, no, false or off)", cfgClip(v))
			}
			return nil
		},
		check: func() error { return nil },
		text:  func() string { return strconv.FormatBool(*p) },
		value: func() slog.Value { return slog.BoolValue(*p) },
	}
}

// cfgDuration reads seconds (5, 0.5) or a Go duration (500ms).
func cfgDuration(key string, p *time.Duration) cfgField {
	return cfgField{
		key: key,
		set: func(v string) error {
			d, err := cfgParseDuration(v)
			if err != nil {
				return err
			}
			*p = d
			return nil
		},
		check: func() error {
			if *p < 0 {
				return fmt.Errorf("%v must not be negative", *p)
			}
			return nil
		},
		text: func() string {
			if *p%time.Second == 0 {
				return strconv.FormatInt(int64(*p/time.Second), 10)
			}
			return p.String()
		},
		value: func() slog.Value { return slog.DurationValue(*p) },
	}
}

func cfgParseDuration(v string) (time.Duration, error) {
	const want = "want seconds, such as 5 or 0.5, or a Go duration such as 500ms"
	if v == "" {
		return 0, errors.New("empty value; " + want)
	}
	if cfgIsDecimal(v) {
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || math.Abs(secs)*1e9 >= math.MaxInt64/2 {
			return 0, fmt.Errorf("%q seconds is too long", cfgClip(v))
		}
		return time.Duration(math.Round(secs * 1e9)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (%s)", cfgClip(v), want)
	}
	return d, nil
}

// cfgIsDecimal reports whether s is digits with at most one '.' and an
// optional sign, as in 5, 0.5, .5, 5. or -1.
func cfgIsDecimal(s string) bool {
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] >= '0' && s[i] <= '9':
			digits++
		case s[i] == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// cfgEnum is one of allowed, matched in any case and stored as canon
// returns it.
func cfgEnum(key string, p *string, canon func(string) string, allowed ...string) cfgField {
	fd := cfgText(key, p, nil)
	fd.check = func() error {
		for _, a := range allowed {
			if strings.EqualFold(*p, a) {
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", cfgClip(*p), strings.Join(allowed, ", "))
	}
	fd.set = func(v string) error {
		*p = canon(v)
		return nil
	}
	fd.canon = func() { *p = canon(*p) }
	return fd
}

// cfgRotatingTime is a time rotation code of Python's TimedRotatingFileHandler
// as OMQS.cfg writes it: NS, NM, NH, ND (every N seconds, minutes, hours,
// days), W0..W6 (weekly on that weekday, 0 is Monday) or MD (midnight).
func cfgRotatingTime(key string, p *string) cfgField {
	fd := cfgText(key, p, nil)
	fd.set = func(v string) error {
		*p = strings.ToUpper(v)
		return nil
	}
	fd.canon = func() { *p = strings.ToUpper(*p) }
	fd.check = func() error {
		if _, err := rotate.ParseSchedule(*p); err != nil {
			return fmt.Errorf("%q is not a rotation time (want NS, NM, NH or ND with a whole N of at least 1, W0 to W6, or MD)", cfgClip(*p))
		}
		return nil
	}
	return fd
}

// cfgURL is MQURL: one or more broker URLs, checked by transport.ParseMQURL,
// whose warnings (pika parameters ignored, a heartbeat the broker caps) the
// field's warnings returns.
func cfgURL(key string, p *string) cfgField {
	fd := cfgText(key, p, nil)
	fd.secret = true
	var warns []string
	fd.warnings = func() []string { return warns }
	fd.check = func() error {
		warns = nil
		if strings.TrimSpace(*p) == "" {
			return errors.New("empty value; want a broker URL such as " + DefaultURL)
		}
		// A ',' separates URLs: one inside a password would split it, and
		// the pieces would be quoted in ParseURLs' message.
		if parts := strings.Split(*p, ","); len(parts) > 1 {
			for i, part := range parts {
				if strings.TrimSpace(part) != "" && !strings.Contains(part, "://") {
					return fmt.Errorf("address %d of %d has no scheme (a ',' separates addresses: write a ',' inside a password as %%2C)", i+1, len(parts))
				}
			}
		}
		_, w, err := transport.ParseMQURL(*p)
		if err != nil {
			msg := err.Error()
			for _, prefix := range []string{key + ": ", key + " "} {
				msg = strings.TrimPrefix(msg, prefix)
			}
			return errors.New(transport.Redact(msg))
		}
		warns = w
		return nil
	}
	fd.text = func() string { return transport.Redact(*p) }
	fd.value = func() slog.Value { return slog.StringValue(transport.Redact(*p)) }
	return fd
}

// cfgFormat is FORMAT, a Python logging format string that pyfmt must
// compile. "" is allowed: NewLogManager then uses DefaultLogFormat.
func cfgFormat(key string, p *string) cfgField {
	fd := cfgText(key, p, cfgUnwrapFormat)
	fd.check = func() error {
		if _, err := pyfmt.Compile(*p); err != nil {
			return fmt.Errorf("%q: %w", cfgClip(*p), err)
		}
		return nil
	}
	return fd
}

// cfgUnwrapFormat removes the wrapping the original's tutorial put around
// FORMAT, a Python expression: ('...'), ("..."), '...' or "...".
func cfgUnwrapFormat(v string) string {
	for _, q := range []string{"'", `"`} {
		if len(v) >= 4 && strings.HasPrefix(v, "("+q) && strings.HasSuffix(v, q+")") {
			return v[2 : len(v)-2]
		}
	}
	for _, q := range []string{"'", `"`} {
		if len(v) >= 2 && strings.HasPrefix(v, q) && strings.HasSuffix(v, q) {
			return v[1 : len(v)-1]
		}
	}
	return v
}

// Validate checks every setting as LoadConfig checks a file: ranges of
// numbers, enumerations (in any case), names AMQP can carry, the log FORMAT
// and the broker URL, and that sections naming the same queue (such as
// [EventWorker] and [EventConsumer] on "omqs.queue.event") agree on its
// QUEUE_TYPE. It does not connect to the broker. The error wraps ErrInvalidConfig
// and names the section and key, as in
//
//	omqs: invalid configuration: [Global] BUFFER_SIZE: 0 must be at least 1
func (c *Config) Validate() error {
	if c == nil {
		return fmt.Errorf("%w: nil *Config", ErrInvalidConfig)
	}
	for _, cs := range c.sections() {
		if err := cs.check(); err != nil {
			return err
		}
	}
	return c.checkSharedQueueTypes()
}

// check runs the checks of the section's fields, as Validate does.
func (cs *cfgSection) check() error {
	for _, fd := range cs.fields {
		if err := fd.check(); err != nil {
			return fmt.Errorf("%w: [%s] %s: %w", ErrInvalidConfig, cs.name, fd.key, err)
		}
	}
	return nil
}

// String returns every setting in the syntax of OMQS.cfg (so '%' is written
// "%%"), with the password of MQURL replaced by "xxxxx". Source and Warnings
// are written as comments.
func (c *Config) String() string {
	if c == nil {
		return "<nil>"
	}
	var b strings.Builder
	if c.Source != "" {
		fmt.Fprintf(&b, "; read from %s\n", c.Source)
	} else {
		b.WriteString("; built-in defaults and settings made in code\n")
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(&b, "; warning: %s\n", strings.ReplaceAll(w, "\n", " "))
	}
	for i, cs := range c.sections() {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[%s]\n", cs.name)
		for _, fd := range cs.fields {
			b.WriteString(fd.key + " =")
			if v := fd.text(); v != "" {
				b.WriteString(" " + strings.ReplaceAll(v, "%", "%%"))
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// LogValue makes a *Config log as a group per section, with the password of
// MQURL replaced by "xxxxx".
func (c *Config) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	var attrs []slog.Attr
	if c.Source != "" {
		attrs = append(attrs, slog.String("source", c.Source))
	}
	for _, cs := range c.sections() {
		group := make([]slog.Attr, len(cs.fields))
		for i, fd := range cs.fields {
			group[i] = slog.Attr{Key: fd.key, Value: fd.value()}
		}
		attrs = append(attrs, slog.Attr{Key: cs.name, Value: slog.GroupValue(group...)})
	}
	return slog.GroupValue(attrs...)
}

// String returns the [Global] settings with the password of MQURL replaced
// by "xxxxx", so that printing a Config value does not reveal it either.
func (g GlobalConfig) String() string {
	return fmt.Sprintf("{MQURL:%s ReconnectInterval:%v ReconnectTimes:%d BufferSize:%d MaxInFlight:%d BufferBytes:%d MaxInFlightBytes:%d}",
		transport.Redact(g.MQURL), g.ReconnectInterval, g.ReconnectTimes, g.BufferSize, g.MaxInFlight, g.BufferBytes, g.MaxInFlightBytes)
}

// LogValue makes GlobalConfig log with the password of MQURL replaced by
// "xxxxx".
func (g GlobalConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("MQURL", transport.Redact(g.MQURL)),
		slog.Duration("RECONNECT_INTERVAL", g.ReconnectInterval),
		slog.Int("RECONNECT_TIMES", g.ReconnectTimes),
		slog.Int("BUFFER_SIZE", g.BufferSize),
		slog.Int("MAX_IN_FLIGHT", g.MaxInFlight),
		slog.Int("BUFFER_BYTES", g.BufferBytes),
		slog.Int("MAX_IN_FLIGHT_BYTES", g.MaxInFlightBytes),
	)
}

// MarshalJSON makes encoding/json (and so slog's JSONHandler) write the
// [Global] settings with the password of MQURL replaced by "xxxxx".
func (g GlobalConfig) MarshalJSON() ([]byte, error) {
	type plain GlobalConfig // without this method
	p := plain(g)
	p.MQURL = transport.Redact(p.MQURL)
	return json.Marshal(p)
}

// clone returns a deep copy of c.
func (c *Config) clone() *Config {
	n := *c
	cp := func(s []string) []string { return append([]string(nil), s...) }
	for _, p := range []*PublisherConfig{&n.AsyncPublisher, &n.SyncPublisher, &n.AsyncBroadcaster, &n.SyncBroadcaster, &n.AsyncRouter, &n.SyncRouter} {
		p.RoutingKeys = cp(p.RoutingKeys)
	}
	for _, w := range []*WorkerConfig{&n.LogWorker, &n.EventWorker} {
		w.Keys = cp(w.Keys)
	}
	for _, cc := range []*ConsumerConfig{&n.LogConsumer, &n.EventConsumer} {
		cc.Keys = cp(cc.Keys)
	}
	n.Warnings = cp(n.Warnings)
	n.origins = maps.Clone(n.origins)
	return &n
}

// normalize writes enumerations in the case LoadConfig stores them in, which
// the broker and the logger expect (Validate accepts any case).
func (c *Config) normalize() {
	for _, cs := range c.sections() {
		for _, fd := range cs.fields {
			if fd.canon != nil {
				fd.canon()
			}
		}
	}
}

// GoString keeps %#v from printing the password of MQURL.
func (g GlobalConfig) GoString() string {
	return fmt.Sprintf("omqs.GlobalConfig{MQURL:%q, ReconnectInterval:%d, ReconnectTimes:%d, BufferSize:%d, MaxInFlight:%d, BufferBytes:%d, MaxInFlightBytes:%d}",
		transport.Redact(g.MQURL), g.ReconnectInterval, g.ReconnectTimes, g.BufferSize, g.MaxInFlight, g.BufferBytes, g.MaxInFlightBytes)
}

// GoString keeps %#v from printing the password of MQURL: it prints the
// settings as String does.
func (c Config) GoString() string { return "omqs.Config(`\n" + c.String() + "`)" }
