package omqs

import (
	"github.com/omqs-go/omqs/internal/transport"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// cfgMustParse parses a file named test.cfg and fails the test on error.
func cfgMustParse(t *testing.T, data string) *Config {
	t.Helper()
	c, err := parseConfig("test.cfg", []byte(data))
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", data, err)
	}
	return c
}

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestShippedConfigIsDefault checks that OMQS.cfg at the root of the module
// holds exactly the built-in defaults.
func TestShippedConfigIsDefault(t *testing.T) {
	c, err := LoadConfig("OMQS.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) > 0 {
		t.Errorf("warnings: %q", c.Warnings)
	}
	if c.Source != "OMQS.cfg" {
		t.Errorf("Source = %q", c.Source)
	}
	want := DefaultConfig()
	want.Source = c.Source
	want.origins = c.origins // where each key was read is TestConfigOrigin's
	if !reflect.DeepEqual(c, want) {
		t.Errorf("OMQS.cfg differs from DefaultConfig:\n%s\nwant\n%s", c, want)
	}
}

// cfgSettingCase is one key: its default, and the value a file sets.
type cfgSettingCase struct {
	section, key, value string
	get                 func(*Config) any
	def, want           any
}

func cfgSettingCases() []cfgSettingCase {
	cases := []cfgSettingCase{
		{"Global", "MQURL", "amqp://u:p@broker:5673/%%2F?heartbeat_interval=30",
			func(c *Config) any { return c.Global.MQURL }, DefaultURL, "amqp://u:p@broker:5673/%2F?heartbeat_interval=30"},
		{"Global", "RECONNECT_INTERVAL", "0.5",
			func(c *Config) any { return c.Global.ReconnectInterval }, 5 * time.Second, 500 * time.Millisecond},
		{"Global", "RECONNECT_TIMES", "0",
			func(c *Config) any { return c.Global.ReconnectTimes }, 100, 0},
		{"Global", "BUFFER_SIZE", "10",
			func(c *Config) any { return c.Global.BufferSize }, 16384, 10},
		{"Global", "MAX_IN_FLIGHT", "1",
			func(c *Config) any { return c.Global.MaxInFlight }, 8192, 1},
		{"Global", "BUFFER_BYTES", "1048576",
			func(c *Config) any { return c.Global.BufferBytes }, 64 << 20, 1 << 20},
		{"Global", "MAX_IN_FLIGHT_BYTES", "4096",
			func(c *Config) any { return c.Global.MaxInFlightBytes }, 64 << 20, 4096},
		{"Global", "JOURNAL", "/var/lib/omqs/journal",
			func(c *Config) any { return c.Global.Journal }, "", "/var/lib/omqs/journal"},
		{"Global", "JOURNAL_SYNC", "interval:10",
			func(c *Config) any { return c.Global.JournalSync }, "none", "interval:10"},
		{"Global", "JOURNAL_MAX_BYTES", "8388608",
			func(c *Config) any { return c.Global.JournalMaxBytes }, 0, 8 << 20},

		{"Log", "FOLDER", "/var/log/omqs",
			func(c *Config) any { return c.Log.Folder }, "./log/", "/var/log/omqs"},
		{"Log", "LEVEL", "debug",
			func(c *Config) any { return c.Log.Level }, "INFO", "DEBUG"},
		{"Log", "FORMAT", "('%%(levelname)s: %%(message)s')",
			func(c *Config) any { return c.Log.Format }, DefaultLogFormat, "%(levelname)s: %(message)s"},
		{"Log", "TYPE", "File",
			func(c *Config) any { return c.Log.Type }, "stream", "file"},
		{"Log", "ROTATION", "False",
			func(c *Config) any { return c.Log.Rotation }, true, false},
		{"Log", "ROTATION_TYPE", "TIME",
			func(c *Config) any { return c.Log.RotationType }, "size", "time"},
		{"Log", "SIZE", "50",
			func(c *Config) any { return c.Log.Size }, 5, 50},
		{"Log", "ROTATING_TIME", "1s",
			func(c *Config) any { return c.Log.RotatingTime }, "MD", "1S"},
		{"Log", "BACKUP_COUNT", "0",
			func(c *Config) any { return c.Log.BackupCount }, 10, 0},
	}

	publishers := []struct {
		section, prefix, kind string
		get                   func(*Config) *PublisherConfig
	}{
		{"AsyncBroadcaster", "asyncBroadcaster", "fanout", func(c *Config) *PublisherConfig { return &c.AsyncBroadcaster }},
		{"SyncBroadcaster", "syncBroadcaster", "fanout", func(c *Config) *PublisherConfig { return &c.SyncBroadcaster }},
		{"AsyncRouter", "asyncRouter", "direct", func(c *Config) *PublisherConfig { return &c.AsyncRouter }},
		{"SyncRouter", "syncRouter", "direct", func(c *Config) *PublisherConfig { return &c.SyncRouter }},
		{"AsyncPublisher", "asyncPublisher", "topic", func(c *Config) *PublisherConfig { return &c.AsyncPublisher }},
		{"SyncPublisher", "syncPublisher", "topic", func(c *Config) *PublisherConfig { return &c.SyncPublisher }},
	}
	for _, p := range publishers {
		get := p.get
		cases = append(cases,
			cfgSettingCase{p.section, "EXCHANGE", "app.exchange",
				func(c *Config) any { return get(c).Exchange }, "omqs.default." + p.prefix + ".exchange", "app.exchange"},
			cfgSettingCase{p.section, "EXCHANGE_TYPE", "Headers",
				func(c *Config) any { return get(c).ExchangeType }, p.kind, "headers"},
			cfgSettingCase{p.section, "EXCHANGE_DURABLE", "yes",
				func(c *Config) any { return get(c).ExchangeDurable }, false, true},
			cfgSettingCase{p.section, "QUEUE", "",
				func(c *Config) any { return get(c).Queue }, "omqs.default." + p.prefix + ".queue", ""},
			cfgSettingCase{p.section, "QUEUE_DURABLE", "1",
				func(c *Config) any { return get(c).QueueDurable }, false, true},
			cfgSettingCase{p.section, "ROUTING_KEY", "a, b",
				func(c *Config) any { return get(c).RoutingKeys }, []string{"omqs.default." + p.prefix + ".key"}, []string{"a", "b"}},
			cfgSettingCase{p.section, "ROUTING_KEYS", "c",
				func(c *Config) any { return get(c).RoutingKeys }, []string{"omqs.default." + p.prefix + ".key"}, []string{"c"}},
		)
	}

	lw := func(c *Config) *WorkerConfig { return &c.LogWorker }
	ew := func(c *Config) *WorkerConfig { return &c.EventWorker }
	workers := []struct {
		section             string
		get                 func(*Config) *WorkerConfig
		exchange, queue     string
		keys                []string
		newQueue, newKeys   string
		wantQueue, wantKeys any
	}{
		{"LogWorker", lw, LogExchange, "", nil, "app.logs", "error, fatal", "app.logs", []string{"error", "fatal"}},
		{"EventWorker", ew, EventExchange, EventQueue, []string{DefaultEventKey}, "", "", "", []string(nil)},
	}
	for _, w := range workers {
		get := w.get
		cases = append(cases,
			cfgSettingCase{w.section, "EXCHANGE", "app.exchange",
				func(c *Config) any { return get(c).Exchange }, w.exchange, "app.exchange"},
			cfgSettingCase{w.section, "EXCHANGE_TYPE", "direct",
				func(c *Config) any { return get(c).ExchangeType }, "topic", "direct"},
			cfgSettingCase{w.section, "EXCHANGE_DURABLE", "false",
				func(c *Config) any { return get(c).ExchangeDurable }, true, false},
			cfgSettingCase{w.section, "QUEUE", w.newQueue,
				func(c *Config) any { return get(c).Queue }, w.queue, w.wantQueue},
			cfgSettingCase{w.section, "QUEUE_DURABLE", "off",
				func(c *Config) any { return get(c).QueueDurable }, true, false},
			cfgSettingCase{w.section, "QUEUE_TYPE", "Quorum",
				func(c *Config) any { return get(c).QueueType }, "classic", "quorum"},
			cfgSettingCase{w.section, "KEYS", w.newKeys,
				func(c *Config) any { return get(c).Keys }, w.keys, w.wantKeys},
		)
		cases = append(cases, cfgQueueArgCases(w.section, func(c *Config) QueueConfig { return get(c).QueueConfig() })...)
	}

	lc := func(c *Config) *ConsumerConfig { return &c.LogConsumer }
	ec := func(c *Config) *ConsumerConfig { return &c.EventConsumer }
	consumers := []struct {
		section                string
		get                    func(*Config) *ConsumerConfig
		exchange, queue, key   string
		durable                bool
		newDurable             string
		newKeys                string
		wantKeys               []string
		newPrefetch            string
		wantPrefetch           int
		newMaxRedel            string
		wantMaxRedel           int
		newDeadLetter, wantDLX string
		queueExpires           time.Duration
	}{
		{"LogConsumer", lc, LogExchange, LogQueue, DefaultLogKey, false, "yes", "#", []string{"#"}, "0", 0, "0", 0, "omqs.dlx", "omqs.dlx", DefaultQueueExpires},
		{"EventConsumer", ec, EventExchange, EventQueue, DefaultEventKey, true, "no", "*.debug, kernel.*", []string{"*.debug", "kernel.*"}, "100", 100, "10", 10, "x", "x", 0},
	}
	for _, k := range consumers {
		get := k.get
		cases = append(cases,
			cfgSettingCase{k.section, "EXCHANGE", "app.exchange",
				func(c *Config) any { return get(c).Exchange }, k.exchange, "app.exchange"},
			cfgSettingCase{k.section, "EXCHANGE_TYPE", "FANOUT",
				func(c *Config) any { return get(c).ExchangeType }, "topic", "fanout"},
			cfgSettingCase{k.section, "EXCHANGE_DURABLE", "0",
				func(c *Config) any { return get(c).ExchangeDurable }, true, false},
			cfgSettingCase{k.section, "QUEUE", "app.queue",
				func(c *Config) any { return get(c).Queue }, k.queue, "app.queue"},
			cfgSettingCase{k.section, "QUEUE_DURABLE", k.newDurable,
				func(c *Config) any { return get(c).QueueDurable }, k.durable, !k.durable},
			cfgSettingCase{k.section, "QUEUE_TYPE", "quorum",
				func(c *Config) any { return get(c).QueueType }, "classic", "quorum"},
			cfgSettingCase{k.section, "KEYS", k.newKeys,
				func(c *Config) any { return get(c).Keys }, []string{k.key}, k.wantKeys},
			cfgSettingCase{k.section, "PREFETCH", k.newPrefetch,
				func(c *Config) any { return get(c).Prefetch }, DefaultPrefetch, k.wantPrefetch},
			cfgSettingCase{k.section, "DEAD_LETTER_EXCHANGE", k.newDeadLetter,
				func(c *Config) any { return get(c).DeadLetterExchange }, "", k.wantDLX},
			cfgSettingCase{k.section, "MAX_REDELIVERIES", k.newMaxRedel,
				func(c *Config) any { return get(c).MaxRedeliveries }, DefaultMaxRedeliveries, k.wantMaxRedel},
			cfgSettingCase{k.section, "MAX_BODY_SIZE", "1048576",
				func(c *Config) any { return get(c).MaxBodySize }, MaxBodySize, 1 << 20},
			cfgSettingCase{k.section, "DELIVERY_LIMIT", "3",
				func(c *Config) any { return get(c).DeliveryLimit }, 0, 3},
			cfgSettingCase{k.section, "MESSAGE_TTL", "90",
				func(c *Config) any { return get(c).MessageTTL }, time.Duration(0), 90 * time.Second},
			cfgSettingCase{k.section, "MAX_LENGTH", "1000",
				func(c *Config) any { return get(c).MaxLength }, 0, 1000},
			cfgSettingCase{k.section, "QUEUE_EXPIRES", "600",
				func(c *Config) any { return get(c).QueueExpires }, k.queueExpires, 10 * time.Minute},
			cfgSettingCase{k.section, "DEDUP_SIZE", "1000",
				func(c *Config) any { return get(c).DedupSize }, 0, 1000},
			cfgSettingCase{k.section, "DEDUP_WINDOW", "2m",
				func(c *Config) any { return get(c).DedupWindow }, time.Duration(0), 2 * time.Minute},
		)
	}
	return cases
}

// cfgQueueArgCases are the cases of the queue settings a worker section
// shares with the consumer sections, beyond QUEUE, QUEUE_DURABLE and
// QUEUE_TYPE.
func cfgQueueArgCases(section string, get func(*Config) QueueConfig) []cfgSettingCase {
	return []cfgSettingCase{
		{section, "DEAD_LETTER_EXCHANGE", "app.dlx",
			func(c *Config) any { return get(c).DeadLetterExchange }, "", "app.dlx"},
		{section, "MESSAGE_TTL", "1500ms",
			func(c *Config) any { return get(c).MessageTTL }, time.Duration(0), 1500 * time.Millisecond},
		{section, "MAX_LENGTH", "10",
			func(c *Config) any { return get(c).MaxLength }, 0, 10},
		{section, "DELIVERY_LIMIT", "4",
			func(c *Config) any { return get(c).DeliveryLimit }, 0, 4},
	}
}

// cfgSharedQueueKeys are the keys that [EventWorker] and [EventConsumer],
// which share "omqs.queue.event", must set alike.
var cfgSharedQueueKeys = map[string]bool{"QUEUE_TYPE": true, "DEAD_LETTER_EXCHANGE": true, "MESSAGE_TTL": true, "MAX_LENGTH": true, "DELIVERY_LIMIT": true}

// TestConfigEverySetting checks, for every key of every section, its default
// and that a file setting it changes the field to the typed value.
func TestConfigEverySetting(t *testing.T) {
	cases := cfgSettingCases()
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.section+"."+tc.key, func(t *testing.T) {
			seen[tc.section+"."+tc.key] = true
			if got := tc.get(DefaultConfig()); !reflect.DeepEqual(got, tc.def) {
				t.Errorf("default = %#v, want %#v", got, tc.def)
			}
			if reflect.DeepEqual(tc.def, tc.want) {
				t.Fatalf("test case does not change the default")
			}
			// [EventWorker] and [EventConsumer] share "omqs.queue.event":
			// its QUEUE_TYPE is set in both or refused.
			partner := map[string]string{"EventWorker": "EventConsumer", "EventConsumer": "EventWorker"}[tc.section]
			file := "[" + tc.section + "]\n" + tc.key + " = " + tc.value + "\n"
			if cfgSharedQueueKeys[tc.key] && partner != "" {
				file += "[" + partner + "]\n" + tc.key + " = " + tc.value + "\n"
			}
			c := cfgMustParse(t, file)
			if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s = %q: got %#v, want %#v", tc.key, tc.value, got, tc.want)
			}
			// Declarations the original's, or another section's, would
			// refuse are warned about (see TestConfigCompatWarnings).
			var compat []string
			for _, w := range c.Warnings {
				if strings.Contains(w, "406 PRECONDITION_FAILED") {
					compat = append(compat, w)
				} else {
					t.Errorf("warning: %q", w)
				}
			}
			// Only that field changed.
			d := DefaultConfig()
			d.Source = c.Source
			d.origins = c.origins
			d.Warnings = compat
			cfgSetField(t, d, tc)
			if cfgSharedQueueKeys[tc.key] && partner != "" {
				ptc := tc
				ptc.section = partner
				cfgSetField(t, d, ptc)
			}
			if !reflect.DeepEqual(c, d) {
				t.Errorf("other settings changed:\n%s\nwant\n%s", c, d)
			}
		})
	}
	// Every key the loader knows has a case here.
	for _, cs := range DefaultConfig().sections() {
		for _, fd := range cs.fields {
			if !seen[cs.name+"."+fd.key] {
				t.Errorf("no test case for [%s] %s", cs.name, fd.key)
			}
		}
	}
}

// cfgSetField sets on want the field tc covers to tc's value, through the
// loader's own binding of the key.
func cfgSetField(t *testing.T, want *Config, tc cfgSettingCase) {
	t.Helper()
	for _, cs := range want.sections() {
		if cs.name != tc.section {
			continue
		}
		for _, fd := range cs.fields {
			if fd.key == tc.key || fd.alias == tc.key {
				v := strings.ReplaceAll(tc.value, "%%", "%")
				if tc.key == "FORMAT" {
					v = cfgUnwrapFormat(v)
				}
				if err := fd.set(v); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no field for [%s] %s", tc.section, tc.key)
}

// TestConfigValueSyntax covers the forms each type accepts.
func TestConfigValueSyntax(t *testing.T) {
	tests := []struct {
		file string
		get  func(*Config) any
		want any
	}{
		// durations: seconds or Go durations
		{"[Global]\nRECONNECT_INTERVAL=5", func(c *Config) any { return c.Global.ReconnectInterval }, 5 * time.Second},
		{"[Global]\nRECONNECT_INTERVAL=0", func(c *Config) any { return c.Global.ReconnectInterval }, time.Duration(0)},
		{"[Global]\nRECONNECT_INTERVAL=.25", func(c *Config) any { return c.Global.ReconnectInterval }, 250 * time.Millisecond},
		{"[Global]\nRECONNECT_INTERVAL=2.", func(c *Config) any { return c.Global.ReconnectInterval }, 2 * time.Second},
		{"[Global]\nRECONNECT_INTERVAL=500ms", func(c *Config) any { return c.Global.ReconnectInterval }, 500 * time.Millisecond},
		{"[Global]\nRECONNECT_INTERVAL=1m30s", func(c *Config) any { return c.Global.ReconnectInterval }, 90 * time.Second},
		// whole numbers
		{"[Global]\nRECONNECT_TIMES=+7", func(c *Config) any { return c.Global.ReconnectTimes }, 7},
		{"[Global]\nRECONNECT_TIMES=007", func(c *Config) any { return c.Global.ReconnectTimes }, 7},
		{"[EventConsumer]\nPREFETCH=65535", func(c *Config) any { return c.EventConsumer.Prefetch }, 65535},
		// booleans, as Python's getboolean
		{"[Log]\nROTATION=0", func(c *Config) any { return c.Log.Rotation }, false},
		{"[Log]\nROTATION=NO", func(c *Config) any { return c.Log.Rotation }, false},
		{"[Log]\nROTATION=false", func(c *Config) any { return c.Log.Rotation }, false},
		{"[Log]\nROTATION=Off", func(c *Config) any { return c.Log.Rotation }, false},
		{"[LogConsumer]\nQUEUE_DURABLE=1", func(c *Config) any { return c.LogConsumer.QueueDurable }, true},
		{"[LogConsumer]\nQUEUE_DURABLE=Yes", func(c *Config) any { return c.LogConsumer.QueueDurable }, true},
		{"[LogConsumer]\nQUEUE_DURABLE=TRUE", func(c *Config) any { return c.LogConsumer.QueueDurable }, true},
		{"[LogConsumer]\nQUEUE_DURABLE=on", func(c *Config) any { return c.LogConsumer.QueueDurable }, true},
		// enumerations in any case, stored canonically
		{"[Log]\nLEVEL=Warn", func(c *Config) any { return c.Log.Level }, "WARN"},
		{"[Log]\nLEVEL=critical", func(c *Config) any { return c.Log.Level }, "CRITICAL"},
		{"[Log]\nTYPE=STREAM", func(c *Config) any { return c.Log.Type }, "stream"},
		{"[Log]\nROTATING_TIME=2m", func(c *Config) any { return c.Log.RotatingTime }, "2M"},
		{"[Log]\nROTATING_TIME=3H", func(c *Config) any { return c.Log.RotatingTime }, "3H"},
		{"[Log]\nROTATING_TIME=4d", func(c *Config) any { return c.Log.RotatingTime }, "4D"},
		{"[Log]\nROTATING_TIME=w6", func(c *Config) any { return c.Log.RotatingTime }, "W6"},
		{"[Log]\nROTATING_TIME=md", func(c *Config) any { return c.Log.RotatingTime }, "MD"},
		{"[Log]\nROTATING_TIME=120S", func(c *Config) any { return c.Log.RotatingTime }, "120S"},
		// FORMAT unwrapping
		{"[Log]\nFORMAT=(\"%%(message)s\")", func(c *Config) any { return c.Log.Format }, "%(message)s"},
		{"[Log]\nFORMAT='%%(message)s'", func(c *Config) any { return c.Log.Format }, "%(message)s"},
		{"[Log]\nFORMAT=\"%%(message)s\"", func(c *Config) any { return c.Log.Format }, "%(message)s"},
		{"[Log]\nFORMAT=[OMQS] %%(message)s", func(c *Config) any { return c.Log.Format }, "[OMQS] %(message)s"},
		{"[Log]\nFORMAT=('%%(message)s'", func(c *Config) any { return c.Log.Format }, "('%(message)s'"},
		{"[Log]\nFORMAT=%%(name)s 'quoted'", func(c *Config) any { return c.Log.Format }, "%(name)s 'quoted'"},
		// lists: split on commas, spaces trimmed, empty items dropped
		{"[EventConsumer]\nKEYS=a, b,c", func(c *Config) any { return c.EventConsumer.Keys }, []string{"a", "b", "c"}},
		{"[EventConsumer]\nKEYS= , a,, b , ", func(c *Config) any { return c.EventConsumer.Keys }, []string{"a", "b"}},
		{"[EventConsumer]\nKEYS=omqs.key.event", func(c *Config) any { return c.EventConsumer.Keys }, []string{"omqs.key.event"}},
		{"[EventConsumer]\nKEYS=,", func(c *Config) any { return c.EventConsumer.Keys }, []string(nil)},
		{"[EventConsumer]\nKEYS=a,\n  b,\n  c", func(c *Config) any { return c.EventConsumer.Keys }, []string{"a", "b", "c"}},
		{"[EventConsumer]\nKEYS=\n  a\n  b", func(c *Config) any { return c.EventConsumer.Keys }, []string{"a", "b"}},
		{"[SyncPublisher]\nROUTING_KEYS=k1,k2", func(c *Config) any { return c.SyncPublisher.RoutingKeys }, []string{"k1", "k2"}},
		{"[SyncPublisher]\nrouting_key=k1", func(c *Config) any { return c.SyncPublisher.RoutingKeys }, []string{"k1"}},
		// comments: whole lines only; ; and # inside a value are kept
		{"; comment\n# comment\n[Log]\n; FOLDER=/nope\n# FOLDER=/nope\nFOLDER=/tmp/a;b#c ; d", func(c *Config) any { return c.Log.Folder }, "/tmp/a;b#c ; d"},
		{"[Log]\n   ; indented comment\nFOLDER=/x", func(c *Config) any { return c.Log.Folder }, "/x"},
		// names in any case, ':' as delimiter, spaces around
		{"[global]\nmqurl : memory://", func(c *Config) any { return c.Global.MQURL }, "memory://"},
		{"[GLOBAL]\n  Buffer_Size   =   7  ", func(c *Config) any { return c.Global.BufferSize }, 7},
		// the last of a repeated key wins
		{"[Global]\nBUFFER_SIZE=1\n[Log]\n[Global]\nBUFFER_SIZE=2", func(c *Config) any { return c.Global.BufferSize }, 2},
		// %-interpolation
		{"[Global]\nMQURL=amqp://u:p@h:5672/%%2F?heartbeat_interval=600", func(c *Config) any { return c.Global.MQURL }, "amqp://u:p@h:5672/%2F?heartbeat_interval=600"},
		{"[Global]\nHOST=h\nPORT=5672\nADDR=%(host)s:%(PORT)s\nMQURL=amqp://%(addr)s/%%2F", func(c *Config) any { return c.Global.MQURL }, "amqp://h:5672/%2F"},
		{"[Global]\nMQURL=amqp://%(HOST)s/\nHOST=later", func(c *Config) any { return c.Global.MQURL }, "amqp://later/"},
		{"[DEFAULT]\nHOST=dflt\n[Global]\nMQURL=amqp://%(host)s/", func(c *Config) any { return c.Global.MQURL }, "amqp://dflt/"},
		{"[DEFAULT]\nHOST=dflt\n[Global]\nHOST=own\nMQURL=amqp://%(host)s/", func(c *Config) any { return c.Global.MQURL }, "amqp://own/"},
		{"[Log]\nFOLDER=/srv\nFORMAT=%(folder)s: %%(message)s", func(c *Config) any { return c.Log.Format }, "/srv: %(message)s"},
		// [DEFAULT] supplies keys a section leaves out
		{"[DEFAULT]\nPREFETCH=7", func(c *Config) any { return []int{c.LogConsumer.Prefetch, c.EventConsumer.Prefetch} }, []int{7, 7}},
		{"[DEFAULT]\nPREFETCH=7\n[LogConsumer]\nPREFETCH=8", func(c *Config) any { return []int{c.LogConsumer.Prefetch, c.EventConsumer.Prefetch} }, []int{8, 7}},
		{"[DEFAULT]\nROUTING_KEY=d\n[SyncPublisher]\nROUTING_KEYS=own", func(c *Config) any { return [][]string{c.AsyncPublisher.RoutingKeys, c.SyncPublisher.RoutingKeys} }, [][]string{{"d"}, {"own"}}},
		// a byte order mark and CRLF line ends
		{"\xef\xbb\xbf[Global]\r\nBUFFER_SIZE = 3\r\n", func(c *Config) any { return c.Global.BufferSize }, 3},
	}
	for _, tt := range tests {
		c := cfgMustParse(t, tt.file)
		if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %#v, want %#v", tt.file, got, tt.want)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: Validate: %v", tt.file, err)
		}
	}
}

// TestConfigErrors checks that each bad file is refused with an error that
// wraps ErrInvalidConfig and names the file, the line, the key and the value.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       string // the message after "omqs: invalid configuration: "
	}{
		{"bad int", "[Global]\nRECONNECT_INTERVAL=5\nRECONNECT_TIMES=abc\n",
			`test.cfg:3: RECONNECT_TIMES: "abc" is not a whole number`},
		{"decimal int", "[Log]\nSIZE=5.5", `test.cfg:2: SIZE: "5.5" is not a whole number`},
		{"huge int", "[Log]\nSIZE=99999999999999999999", `test.cfg:2: SIZE: "99999999999999999999" is out of range`},
		{"empty int", "[Log]\nBACKUP_COUNT=", `test.cfg:2: BACKUP_COUNT: empty value; want a whole number`},
		{"buffer size 0", "[Global]\nBUFFER_SIZE=0", `test.cfg:2: BUFFER_SIZE: 0 must be at least 1`},
		{"buffer size huge", "[Global]\nBUFFER_SIZE=1000000000", `test.cfg:2: BUFFER_SIZE: 1000000000 must be at most 16777216`},
		{"max in flight 0", "[Global]\nMAX_IN_FLIGHT=0", `test.cfg:2: MAX_IN_FLIGHT: 0 must be at least 1`},
		{"reconnect times negative", "[Global]\nRECONNECT_TIMES=-1", `test.cfg:2: RECONNECT_TIMES: -1 must be at least 0`},
		{"size 0", "[Log]\nSIZE=0", `test.cfg:2: SIZE: 0 must be at least 1`},
		{"backup count negative", "[Log]\nBACKUP_COUNT=-2", `test.cfg:2: BACKUP_COUNT: -2 must be at least 0`},
		{"prefetch negative", "[LogConsumer]\nPREFETCH=-1", `test.cfg:2: PREFETCH: -1 must be at least 0`},
		{"prefetch too large", "[LogConsumer]\nPREFETCH=65536", `test.cfg:2: PREFETCH: 65536 must be at most 65535`},
		{"max redeliveries negative", "[EventConsumer]\nMAX_REDELIVERIES=-1", `test.cfg:2: MAX_REDELIVERIES: -1 must be at least 0`},
		{"max body size 0", "[EventConsumer]\nMAX_BODY_SIZE=0", `test.cfg:2: MAX_BODY_SIZE: 0 must be at least 1`},
		{"buffer bytes 0", "[Global]\nBUFFER_BYTES=0", `test.cfg:2: BUFFER_BYTES: 0 must be at least 1`},
		{"max in flight bytes 0", "[Global]\nMAX_IN_FLIGHT_BYTES=0", `test.cfg:2: MAX_IN_FLIGHT_BYTES: 0 must be at least 1`},

		{"bad bool", "[Log]\nROTATION=maybe", `test.cfg:2: ROTATION: "maybe" is not a boolean (want 1, yes, true, on, 0, no, false or off)`},
		{"bool 2", "[AsyncPublisher]\nEXCHANGE_DURABLE=2", `test.cfg:2: EXCHANGE_DURABLE: "2" is not a boolean`},
		{"empty bool", "[EventWorker]\nQUEUE_DURABLE=", `test.cfg:2: QUEUE_DURABLE: empty value; want a boolean`},

		{"bad duration", "[Global]\nRECONNECT_INTERVAL=soon", `test.cfg:2: RECONNECT_INTERVAL: "soon" is not a duration (want seconds, such as 5 or 0.5, or a Go duration such as 500ms)`},
		{"duration with space", "[Global]\nRECONNECT_INTERVAL=5 s", `test.cfg:2: RECONNECT_INTERVAL: "5 s" is not a duration`},
		{"negative seconds", "[Global]\nRECONNECT_INTERVAL=-1", `test.cfg:2: RECONNECT_INTERVAL: -1s must not be negative`},
		{"negative duration", "[Global]\nRECONNECT_INTERVAL=-500ms", `test.cfg:2: RECONNECT_INTERVAL: -500ms must not be negative`},
		{"endless seconds", "[Global]\nRECONNECT_INTERVAL=99999999999", `test.cfg:2: RECONNECT_INTERVAL: "99999999999" seconds is too long`},
		{"empty duration", "[Global]\nRECONNECT_INTERVAL=", `test.cfg:2: RECONNECT_INTERVAL: empty value; want seconds`},

		{"bad level", "[Log]\nLEVEL=verbose", `test.cfg:2: LEVEL: "VERBOSE" is not one of DEBUG, INFO, WARNING, WARN, ERROR, FATAL, CRITICAL`},
		{"empty level", "[Log]\nLEVEL=", `test.cfg:2: LEVEL: "" is not one of DEBUG`},
		{"bad type", "[Log]\nTYPE=syslog", `test.cfg:2: TYPE: "syslog" is not one of stream, file`},
		{"bad rotation type", "[Log]\nROTATION_TYPE=daily", `test.cfg:2: ROTATION_TYPE: "daily" is not one of size, time`},
		{"bad exchange type", "[SyncRouter]\nEXCHANGE_TYPE=x-delayed-message", `test.cfg:2: EXCHANGE_TYPE: "x-delayed-message" is not one of topic, direct, fanout, headers`},
		{"bad queue type", "[LogWorker]\nQUEUE_TYPE=stream", `test.cfg:2: QUEUE_TYPE: "stream" is not one of classic, quorum`},
		{"rotating time 0S", "[Log]\nROTATING_TIME=0S", `test.cfg:2: ROTATING_TIME: "0S" is not a rotation time (want NS, NM, NH or ND with a whole N of at least 1, W0 to W6, or MD)`},
		{"rotating time S", "[Log]\nROTATING_TIME=S", `test.cfg:2: ROTATING_TIME: "S" is not a rotation time`},
		{"rotating time W7", "[Log]\nROTATING_TIME=W7", `test.cfg:2: ROTATING_TIME: "W7" is not a rotation time`},
		{"rotating time unit", "[Log]\nROTATING_TIME=1X", `test.cfg:2: ROTATING_TIME: "1X" is not a rotation time`},
		{"rotating time decimal", "[Log]\nROTATING_TIME=1.5H", `test.cfg:2: ROTATING_TIME: "1.5H" is not a rotation time`},
		{"rotating time endless", "[Log]\nROTATING_TIME=99999999999D", `test.cfg:2: ROTATING_TIME: "99999999999D" is not a rotation time`},
		{"rotating time midnight", "[Log]\nROTATING_TIME=midnight", `test.cfg:2: ROTATING_TIME: "MIDNIGHT" is not a rotation time`},

		{"url without scheme", "[Global]\nMQURL=localhost:5672", `test.cfg:2: MQURL: "localhost:5672": no scheme`},
		{"url scheme", "[Global]\nMQURL=http://u:pw@h/", `test.cfg:2: MQURL: "http://u:xxxxx@h/": unknown scheme "http"`},
		{"url parameter", "[Global]\nMQURL=amqp://u:pw@h/%%2F?nope=1", `test.cfg:2: MQURL: "amqp://u:xxxxx@h/%2F?nope=1": unsupported query parameter nope`},
		{"pika parameter out of range", "[Global]\nMQURL=amqp://u:pw@h/%%2F?frame_max=1", `test.cfg:2: MQURL: "amqp://u:xxxxx@h/%2F?frame_max=1": frame_max: 1 is not a whole number from 4096 to 131072`},
		{"empty url", "[Global]\nMQURL=", `test.cfg:2: MQURL: empty value; want a broker URL`},
		{"url raw %2F", "[Global]\nMQURL=amqp://u:pw@h/%2F", `test.cfg:2: MQURL: "amqp://u:xxxxx@h/%2F": bad interpolation syntax: '%' at byte 15 must be followed by '%'`},

		{"lone percent", "[Log]\nFOLDER=/tmp/100%", `test.cfg:2: FOLDER: "/tmp/100%": bad interpolation syntax: '%' at byte 9`},
		{"open reference", "[Log]\nFOLDER=%(x", `test.cfg:2: FOLDER: "%(x": bad interpolation syntax`},
		{"undefined reference", "[Log]\nFOLDER=%(nowhere)s", `test.cfg:2: FOLDER: "%(nowhere)s": undefined interpolation reference: %(nowhere)s`},
		{"reference to another section", "[Global]\nHOST=h\n[Log]\nFOLDER=%(host)s", `test.cfg:4: FOLDER: "%(host)s": undefined interpolation reference`},
		{"reference cycle", "[Log]\nA=%(b)s\nB=%(a)s\nFOLDER=%(a)s", `test.cfg:4: FOLDER: "%(a)s": interpolation too deep`},
		{"bad referenced value", "[Log]\nA=50%\nFOLDER=%(a)s", `test.cfg:3: FOLDER: "%(a)s": bad interpolation syntax: '%' at byte 3 in the value of %(a)s`},

		{"routing key twice", "[AsyncPublisher]\nROUTING_KEY=a\nROUTING_KEYS=b", `test.cfg:3: ROUTING_KEYS: ROUTING_KEY is also set (line 2); set only one of ROUTING_KEY and ROUTING_KEYS`},
		{"routing key twice reversed", "[AsyncPublisher]\nrouting_keys=a\nRouting_Key=b", `test.cfg:3: ROUTING_KEY: ROUTING_KEYS is also set (line 2)`},
		{"routing key twice in DEFAULT", "[DEFAULT]\nROUTING_KEY=a\nROUTING_KEYS=b", `test.cfg:3: ROUTING_KEYS: ROUTING_KEY is also set (line 2)`},
		{"multi-line scalar", "[Global]\nRECONNECT_TIMES=1\n  2", `test.cfg:2: RECONNECT_TIMES: "1\n2" continues on an indented line`},
		{"indented key", "[Global]\nMQURL=memory://\n  BUFFER_SIZE=2", `test.cfg:2: MQURL: "memory://\nBUFFER_SIZE=2" continues on an indented line`},
		{"long name", "[LogConsumer]\nQUEUE=" + strings.Repeat("q", 256), `test.cfg:2: QUEUE: "` + strings.Repeat("q", 120) + `..." is longer than 255 bytes`},
		{"long key", "[LogConsumer]\nKEYS=a," + strings.Repeat("k", 256), `test.cfg:2: KEYS: "` + strings.Repeat("k", 120) + `..." is longer than 255 bytes`},
		{"control character", "[LogConsumer]\nDEAD_LETTER_EXCHANGE=a\x01b", `test.cfg:2: DEAD_LETTER_EXCHANGE: "a\x01b" contains a control character`},
		{"bad format", "[Log]\nFORMAT = %%(levelnam)s %%(message)d", `test.cfg:2: FORMAT: "%(levelnam)s %(message)d": log format: position 1: unknown field "levelnam" (did you mean "levelname"?)`},
		{"bad wrapped format", "[Log]\nFORMAT = ('%%(message)d')", `test.cfg:2: FORMAT: "%(message)d": log format: position 1: %d needs a number`},
		{"bad value from DEFAULT", "[DEFAULT]\nPREFETCH=lots\n[LogConsumer]\nQUEUE=q", `test.cfg:2: PREFETCH: "lots" is not a whole number`},

		{"unknown section", "[Global]\nBUFFER_SIZE=1\n\n[Globals]\nBUFFER_SIZE=2", `test.cfg:4: unknown section [Globals] (the sections are Global, Log, AsyncBroadcaster,`},
		{"key before any section", "BUFFER_SIZE=1\n[Global]", `test.cfg:1: setting before the first [Section] header`},
		{"not a setting", "[Global]\nBUFFER_SIZE 1", `test.cfg:2: not a [Section] header, a ; or # comment, nor KEY = value`},
		{"unclosed header", "[Global\nBUFFER_SIZE=1", `test.cfg:1: section header without closing ']'`},
		{"too large", "[Global]\n" + strings.Repeat(";\n", 40000), `test.cfg: the file has 80009 bytes, more than the 65536`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig("test.cfg", []byte(tt.file))
			if err == nil {
				t.Fatalf("no error; got\n%s", c)
			}
			if c != nil {
				t.Errorf("a Config came back with the error")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			want := ErrInvalidConfig.Error() + ": " + tt.want
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got  %q\nwant %q...", err, want)
			}
		})
	}
}

// TestConfigWarnings checks that unknown keys are reported, not refused.
func TestConfigWarnings(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "[Global]\nBUFFER_SIZE=3\nFOO=bar\n",
			[]string{"test.cfg:3: unknown key [Global] FOO (ignored)"}},
		{"key of another section", "[Log]\nlevel=debug\nmqurl=memory://\n",
			[]string{"test.cfg:3: unknown key [Log] mqurl (ignored)"}},
		{"unknown key in DEFAULT", "[DEFAULT]\nNOTHING=1\nPREFETCH=3\n",
			[]string{"test.cfg:2: unknown key [DEFAULT] NOTHING (ignored)"}},
		{"variables used by a reference are not unknown", "[DEFAULT]\nDOMAIN=example.org\n[Global]\nHOST=mq.%(domain)s\nMQURL=amqp://%(host)s/\n",
			nil},
		{"a variable nothing uses is", "[Global]\nHOST=h\nMQURL=memory://\n",
			[]string{"test.cfg:2: unknown key [Global] HOST (ignored)"}},
		{"repeated key", "[Log]\nSIZE=1\nSIZE=2\n[Global]\n[log]\nsize=3\n",
			[]string{"test.cfg:2: [Log] SIZE is set again on line 6, which wins", "test.cfg:3: [Log] SIZE is set again on line 6, which wins"}},
		{"in line order", "[Log]\nZ=1\n[Global]\nA=1\n[Log]\nY=1\n",
			[]string{"test.cfg:2: unknown key [Log] Z (ignored)", "test.cfg:4: unknown key [Global] A (ignored)", "test.cfg:6: unknown key [Log] Y (ignored)"}},
		{"an unknown key is not interpolated", "[Log]\nNOTES=100%\n",
			[]string{"test.cfg:2: unknown key [Log] NOTES (ignored)"}},
		{"empty sections", "[LogWorker]\n[EventWorker]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfgMustParse(t, tt.file)
			if !reflect.DeepEqual(c.Warnings, tt.want) {
				t.Errorf("got  %q\nwant %q", c.Warnings, tt.want)
			}
		})
	}
}

func TestLoadConfigFiles(t *testing.T) {
	t.Run("original", func(t *testing.T) {
		// The original library's OMQS.cfg loads unchanged.
		c, err := LoadConfig(filepath.Join("testdata", "config", "original.cfg"))
		if err != nil {
			t.Fatal(err)
		}
		// Its only warning: the broker caps heartbeat_interval=600.
		if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "testdata/config/original.cfg:3: [Global] MQURL: heartbeat_interval=600: the broker caps") {
			t.Errorf("warnings: %q", c.Warnings)
		}
		if want := "amqp://artcm:111@192.168.31.225:5672/%2F?heartbeat_interval=600"; c.Global.MQURL != want {
			t.Errorf("MQURL = %q, want %q", c.Global.MQURL, want)
		}
		if want := "[OMQS] " + DefaultLogFormat; c.Log.Format != want {
			t.Errorf("FORMAT = %q, want %q", c.Log.Format, want)
		}
		if c.Log.RotatingTime != "1S" || !reflect.DeepEqual(c.SyncPublisher.RoutingKeys, []string{DefaultRoutingKey}) {
			t.Errorf("ROTATING_TIME = %q, [SyncPublisher] ROUTING_KEYS = %q", c.Log.RotatingTime, c.SyncPublisher.RoutingKeys)
		}
	})
	t.Run("full", func(t *testing.T) {
		path := filepath.Join("testdata", "config", "full.cfg")
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Source != path || len(c.Warnings) > 0 {
			t.Errorf("Source = %q, Warnings = %q", c.Source, c.Warnings)
		}
		if c.Global.MQURL != "amqp://broker.example:5673/%2F?heartbeat_interval=30" {
			t.Errorf("MQURL = %q", c.Global.MQURL)
		}
		if c.Log.Format != "%(asctime)s %(levelname)s %(message)s" {
			t.Errorf("FORMAT = %q", c.Log.Format)
		}
		if !reflect.DeepEqual(c.LogWorker.Keys, []string{"fatal", "error", "warning", "info", "debug"}) {
			t.Errorf("[LogWorker] KEYS = %q", c.LogWorker.Keys)
		}
		// QUEUE_TYPE comes from [DEFAULT] where a section has the key and does not set it.
		if c.LogWorker.QueueType != "quorum" || c.EventWorker.QueueType != "classic" || c.EventConsumer.QueueType != "quorum" {
			t.Errorf("QUEUE_TYPE: %q %q %q", c.LogWorker.QueueType, c.EventWorker.QueueType, c.EventConsumer.QueueType)
		}
		// Every setting differs from its default.
		d := DefaultConfig()
		for _, tc := range cfgSettingCases() {
			if tc.section == "EventWorker" && (tc.key == "QUEUE_TYPE" || tc.key == "KEYS" || tc.key == "QUEUE") {
				continue // set to show that a section overrides [DEFAULT] / clears a list
			}
			if reflect.DeepEqual(tc.get(c), tc.get(d)) {
				t.Errorf("[%s] %s is still the default %v", tc.section, tc.key, tc.get(c))
			}
		}
	})
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope", "OMQS.cfg")
		_, err := LoadConfig(path)
		if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("got %v, want fs.ErrNotExist and ErrInvalidConfig", err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name %s", err, path)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := LoadConfig(t.TempDir()); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("error names the path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bad.cfg")
		if err := os.WriteFile(path, []byte("[Global]\nRECONNECT_TIMES=abc\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if want := path + `:2: RECONNECT_TIMES: "abc" is not a whole number`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %q", err, want)
		}
	})
}

func TestResolveConfig(t *testing.T) {
	writeCfg := func(t *testing.T, dir, body string) string {
		t.Helper()
		path := filepath.Join(dir, "OMQS.cfg")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("OMQS_CONFIG", func(t *testing.T) {
		path := writeCfg(t, t.TempDir(), "[Global]\nBUFFER_SIZE=11\n")
		writeCfg(t, cfgChdirTemp(t), "[Global]\nBUFFER_SIZE=22\n") // not used
		t.Setenv("OMQS_CONFIG", path)
		c, err := resolveConfig()
		if err != nil {
			t.Fatal(err)
		}
		if c.Source != path || c.Global.BufferSize != 11 {
			t.Errorf("Source %q, BUFFER_SIZE %d; want %s, 11", c.Source, c.Global.BufferSize, path)
		}
	})
	t.Run("OMQS_CONFIG missing", func(t *testing.T) {
		writeCfg(t, cfgChdirTemp(t), "[Global]\nBUFFER_SIZE=22\n") // not a fallback
		path := filepath.Join(t.TempDir(), "gone.cfg")
		t.Setenv("OMQS_CONFIG", path)
		_, err := resolveConfig()
		if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("got %v", err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "OMQS_CONFIG") {
			t.Errorf("error %q should name %s and $OMQS_CONFIG", err, path)
		}
	})
	t.Run("OMQS_CONFIG invalid", func(t *testing.T) {
		path := writeCfg(t, t.TempDir(), "[Global]\nBUFFER_SIZE=0\n")
		t.Setenv("OMQS_CONFIG", path)
		if _, err := resolveConfig(); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("current directory", func(t *testing.T) {
		t.Setenv("OMQS_CONFIG", "")
		writeCfg(t, cfgChdirTemp(t), "[Global]\nBUFFER_SIZE=22\n")
		c, err := resolveConfig()
		if err != nil {
			t.Fatal(err)
		}
		if c.Source != "OMQS.cfg" || c.Global.BufferSize != 22 {
			t.Errorf("Source %q, BUFFER_SIZE %d", c.Source, c.Global.BufferSize)
		}
	})
	t.Run("current directory invalid", func(t *testing.T) {
		t.Setenv("OMQS_CONFIG", "")
		writeCfg(t, cfgChdirTemp(t), "[Global]\nBUFFER_SIZE=x\n")
		_, err := resolveConfig()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "OMQS.cfg:2: BUFFER_SIZE") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		t.Setenv("OMQS_CONFIG", "")
		cfgChdirTemp(t)
		c, err := resolveConfig()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, DefaultConfig()) {
			t.Errorf("got\n%s\nwant the defaults", c)
		}
	})
}

// cfgChdirTemp changes to a new empty directory for the rest of the test.
func cfgChdirTemp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"buffer size", func(c *Config) { c.Global.BufferSize = 0 }, "[Global] BUFFER_SIZE: 0 must be at least 1"},
		{"max in flight", func(c *Config) { c.Global.MaxInFlight = -3 }, "[Global] MAX_IN_FLIGHT: -3 must be at least 1"},
		{"reconnect interval", func(c *Config) { c.Global.ReconnectInterval = -time.Second }, "[Global] RECONNECT_INTERVAL: -1s must not be negative"},
		{"reconnect times", func(c *Config) { c.Global.ReconnectTimes = -1 }, "[Global] RECONNECT_TIMES: -1 must be at least 0"},
		{"empty url", func(c *Config) { c.Global.MQURL = "" }, "[Global] MQURL: empty value; want a broker URL such as amqp://guest:guest@localhost:5672/%2F"},
		{"bad url", func(c *Config) { c.Global.MQURL = "amqp://u:s3cr3t@h/?nope=1" }, `[Global] MQURL: "amqp://u:xxxxx@h/?nope=1": unsupported query parameter nope`},
		{"memory url", func(c *Config) { c.Global.MQURL = "memory://test" }, ""},
		{"several urls", func(c *Config) { c.Global.MQURL = "amqp://a/?allow_plaintext=1, amqps://b/" }, ""},
		{"mixed schemes", func(c *Config) { c.Global.MQURL = "amqp://a/, amqps://b/" }, `[Global] MQURL: "amqp://a/, amqps://b/": address 1 is amqp:// (plaintext) while address 2 is amqps://`},
		{"level", func(c *Config) { c.Log.Level = "TRACE" }, `[Log] LEVEL: "TRACE" is not one of DEBUG, INFO, WARNING, WARN, ERROR, FATAL, CRITICAL`},
		{"level any case", func(c *Config) { c.Log.Level = "warning" }, ""},
		{"type", func(c *Config) { c.Log.Type = "" }, `[Log] TYPE: "" is not one of stream, file`},
		{"rotation type", func(c *Config) { c.Log.RotationType = "weekly" }, `[Log] ROTATION_TYPE: "weekly" is not one of size, time`},
		{"size", func(c *Config) { c.Log.Size = 0 }, "[Log] SIZE: 0 must be at least 1"},
		{"rotating time", func(c *Config) { c.Log.RotatingTime = "1W" }, `[Log] ROTATING_TIME: "1W" is not a rotation time`},
		{"rotating time any case", func(c *Config) { c.Log.RotatingTime = "w3" }, ""},
		{"format", func(c *Config) { c.Log.Format = "%(asctime)s %" }, `[Log] FORMAT: "%(asctime)s %": log format: position 13: '%' at the end`},
		{"empty format", func(c *Config) { c.Log.Format = "" }, ""},
		{"backup count", func(c *Config) { c.Log.BackupCount = -1 }, "[Log] BACKUP_COUNT: -1 must be at least 0"},
		{"exchange type", func(c *Config) { c.SyncRouter.ExchangeType = "x" }, `[SyncRouter] EXCHANGE_TYPE: "x" is not one of topic, direct, fanout, headers`},
		{"exchange type any case", func(c *Config) { c.SyncRouter.ExchangeType = "Direct" }, ""},
		{"routing key", func(c *Config) { c.AsyncPublisher.RoutingKeys = []string{"ok", strings.Repeat("k", 256)} }, `[AsyncPublisher] ROUTING_KEY: "kkkk`},
		{"worker queue type", func(c *Config) { c.EventWorker.QueueType = "" }, `[EventWorker] QUEUE_TYPE: "" is not one of classic, quorum`},
		{"worker exchange name", func(c *Config) { c.LogWorker.Exchange = "a\nb" }, `[LogWorker] EXCHANGE: "a\nb" contains a control character`},
		{"consumer prefetch", func(c *Config) { c.LogConsumer.Prefetch = -1 }, "[LogConsumer] PREFETCH: -1 must be at least 0"},
		{"consumer max redeliveries", func(c *Config) { c.EventConsumer.MaxRedeliveries = -1 }, "[EventConsumer] MAX_REDELIVERIES: -1 must be at least 0"},
		{"consumer dead letter", func(c *Config) { c.EventConsumer.DeadLetterExchange = strings.Repeat("d", 300) }, `[EventConsumer] DEAD_LETTER_EXCHANGE: "dddd`},
		{"empty names are fine", func(c *Config) { c.LogConsumer.Queue, c.LogConsumer.Exchange, c.LogConsumer.Keys = "", "", nil }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
			if want := "omqs: invalid configuration: " + tt.want; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got  %q\nwant %q...", err, want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	var nilConfig *Config
	if err := nilConfig.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil Config: got %v", err)
	}
}

// TestConfigHidesPassword checks that no way of printing or logging a Config,
// and no error about its MQURL, reveals the password.
func TestConfigHidesPassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	for _, url := range []string{
		"amqp://user:" + secret + "@mq1:5672/%2F, amqps://user:" + secret + "@mq2:5671/%2F?heartbeat=10",
		"amqp://user:" + secret + ",x@mq1:5672/%2F,amqp://user:x," + secret + "@mq2/", // ',' in passwords
		"amqp://user:" + secret + "@mq1/%zz,amqp://user:" + secret + "@mq2:port/",     // unparsable
	} {
		c := DefaultConfig()
		c.Global.MQURL = url
		var jsonOut, textOut bytes.Buffer
		slog.New(slog.NewJSONHandler(&jsonOut, nil)).Info("config", "cfg", c)
		slog.New(slog.NewTextHandler(&textOut, nil)).Info("config", "cfg", c, "global", c.Global)
		var jsonValueOut bytes.Buffer
		slog.New(slog.NewJSONHandler(&jsonValueOut, nil)).Info("config", "cfg", *c)
		jsonValue, err := json.Marshal(*c)
		if err != nil {
			t.Fatal(err)
		}
		jsonPointer, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		outputs := map[string]string{
			"String":           c.String(),
			"%v":               fmt.Sprintf("%v", c),
			"%+v of the value": fmt.Sprintf("%+v", *c),
			"%v of Global":     fmt.Sprintf("%v", c.Global),
			"slog JSON":        jsonOut.String(),
			"slog text":        textOut.String(),
			"slog JSON value":  jsonValueOut.String(),
			"json of value":    string(jsonValue),
			"json of pointer":  string(jsonPointer),
			"Validate":         fmt.Sprint(c.Validate()),
		}
		for name, out := range outputs {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows the password:\n%s", name, out)
			}
			if name != "Validate" && (!strings.Contains(out, "xxxxx@mq1") || !strings.Contains(out, "xxxxx@mq2")) {
				t.Errorf("%s does not show the redacted URLs:\n%s", name, out)
			}
		}
		if !strings.Contains(jsonOut.String(), `"Global":{"MQURL":"amqp://`) {
			t.Errorf("slog JSON has no Global group: %s", jsonOut.String())
		}
	}

	bad := []string{
		"[Global]\nMQURL=amqp://user:" + secret + "@h:5672/%%2F?frame_max=9",
		"[Global]\nMQURL=amqp://user:" + secret + "@h:5672/%2F",
		"[Global]\nMQURL=amqp://user:" + secret + "@h:notaport/",
		"[Global]\nMQURL=amqp://user:" + secret + "@h/%(nope)s",
		"[Global]\nMQURL=amqp://user:" + secret + "@h/\n  x",
		"[Global]\nMQURL=ftp://user:" + secret + "@h/",
		"[Global]\nMQURL=amqp://user:" + secret + "@h/%zz",
		"[Global]\nMQURL=amqp://user:pa," + secret + "@h/",
		"[Global]\nMQURL=amqp://user:" + secret + ",x@h/",
		"[Global]\nMQURL=amqp://user:" + secret + ",x@h/%(nope)s",
		"[Global]\nMQURL=amqp://user:" + secret + ",x@h/, memory://",
	}
	for _, file := range bad {
		_, err := parseConfig("test.cfg", []byte(file))
		if err == nil {
			t.Errorf("%q: no error", file)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%q: error shows the password: %v", file, err)
		}
	}
}

// TestConfigStringRoundTrip checks that String writes a valid OMQS.cfg that
// loads back to the same settings.
func TestConfigStringRoundTrip(t *testing.T) {
	for _, path := range []string{"OMQS.cfg", filepath.Join("testdata", "config", "full.cfg")} {
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		c.Global.MQURL = "amqp://mq.example:5672/%2F" // no password to hide
		back := cfgMustParse(t, c.String())
		if len(back.Warnings) > 0 {
			t.Errorf("%s: warnings %q", path, back.Warnings)
		}
		back.Source = c.Source
		back.origins = c.origins // the lines differ
		if !reflect.DeepEqual(back, c) {
			t.Errorf("%s: String does not load back:\n%s\nwant\n%s", path, back, c)
		}
	}
	var nilConfig *Config
	if nilConfig.String() != "<nil>" || nilConfig.LogValue().String() != "<nil>" {
		t.Error("nil *Config does not print as <nil>")
	}
}

func ExampleLoadConfig() {
	c, err := LoadConfig("testdata/config/original.cfg")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Global.ReconnectInterval, c.Global.ReconnectTimes, c.Log.Level)
	fmt.Println(c.Global.MQURL == "amqp://artcm:111@192.168.31.225:5672/%2F?heartbeat_interval=600")

	_, err = LoadConfig("testdata/config/bad.cfg")
	fmt.Println(err)
	// Output:
	// 5s 100 INFO
	// true
	// omqs: invalid configuration: testdata/config/bad.cfg:3: RECONNECT_TIMES: "often" is not a whole number
}

func ExampleConfig_Validate() {
	c := DefaultConfig()
	c.Global.BufferSize = 0
	fmt.Println(c.Validate())
	// Output:
	// omqs: invalid configuration: [Global] BUFFER_SIZE: 0 must be at least 1
}

func TestCfgRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"memory://", "memory://"},
		{"amqp://localhost/", "amqp://localhost/"},
		{"amqp://guest@localhost/", "amqp://guest@localhost/"},
		{"amqp://guest:guest@localhost:5672/%2F", "amqp://guest:xxxxx@localhost:5672/%2F"},
		{"amqp://u:p1@a/,amqps://v:p2@b/", "amqp://u:xxxxx@a/,amqps://v:xxxxx@b/"},
		{"amqp://u:pa,ss@h/", "amqp://u:xxxxx@h/"},
		{"amqp://u:a,b@h1/, amqp://v:c,d@h2/", "amqp://u:xxxxx@h1/, amqp://v:xxxxx@h2/"},
		{"amqp://u:p@ss@h/", "amqp://u:xxxxx@h/"},
		{"amqp://u:xxxxx@h/", "amqp://u:xxxxx@h/"},
	}
	for _, tt := range tests {
		got := transport.Redact(tt.in)
		if got != tt.want {
			t.Errorf("transport.Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if again := transport.Redact(got); again != got {
			t.Errorf("transport.Redact(%q) = %q: not idempotent", got, again)
		}
	}
}

// TestCfgNormalize checks that normalize writes every enumeration in the
// case DefaultConfig uses.
func TestCfgNormalize(t *testing.T) {
	c := DefaultConfig()
	c.Log.Level, c.Log.Type, c.Log.RotationType, c.Log.RotatingTime = "Info", "STREAM", "Size", "md"
	for _, p := range []*PublisherConfig{&c.AsyncPublisher, &c.SyncPublisher, &c.AsyncBroadcaster, &c.SyncBroadcaster, &c.AsyncRouter, &c.SyncRouter} {
		p.ExchangeType = strings.ToUpper(p.ExchangeType)
	}
	for _, w := range []*WorkerConfig{&c.LogWorker, &c.EventWorker} {
		w.ExchangeType, w.QueueType = strings.ToUpper(w.ExchangeType), "Classic"
	}
	for _, cc := range []*ConsumerConfig{&c.LogConsumer, &c.EventConsumer} {
		cc.ExchangeType, cc.QueueType = strings.ToUpper(cc.ExchangeType), "CLASSIC"
	}
	c.normalize()
	if want := DefaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("normalize gave\n%s\nwant\n%s", c, want)
	}
}
