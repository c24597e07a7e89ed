package omqs

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPrioritySettings checks, for every setting an option can set, that
// the option beats OMQS.cfg and OMQS.cfg beats the default — with the file
// found through $OMQS_CONFIG, through ./OMQS.cfg and through WithConfigFile.
func TestPrioritySettings(t *testing.T) {
	file := `[Global]
MQURL=amqp://file:pw@file-host:5672/%%2F
RECONNECT_INTERVAL=7
RECONNECT_TIMES=9
BUFFER_SIZE=333
MAX_IN_FLIGHT=44
BUFFER_BYTES=5555
MAX_IN_FLIGHT_BYTES=6666
JOURNAL=/tmp/journal-from-file
[Log]
FOLDER=/tmp/from-file/
[AsyncPublisher]
EXCHANGE=file.x
EXCHANGE_TYPE=direct
EXCHANGE_DURABLE=True
QUEUE=file.q
QUEUE_DURABLE=True
ROUTING_KEY=file.k1, file.k2
`
	dir := t.TempDir()
	path := filepath.Join(dir, "OMQS.cfg")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	type setting struct {
		name             string
		opt              Option
		get              func(s *settings) string
		def, fromFile, o string
	}
	pub := func(s *settings) topology {
		t, err := publisherTopology(s)
		if err != nil {
			panic(err)
		}
		return t
	}
	// The options of NewManager and NewAsyncPublisher together.
	rule := ctorRule{options: concat(managerOptions, publisherOptions), sections: publisherSections, section: "AsyncPublisher"}
	settingsTable := []setting{
		{"MQURL", WithURL("memory://opt"), func(s *settings) string { return s.cfg.Global.MQURL },
			DefaultURL, "amqp://file:pw@file-host:5672/%2F", "memory://opt"},
		{"RECONNECT_INTERVAL", WithReconnect(time.Second, 9), func(s *settings) string { return s.cfg.Global.ReconnectInterval.String() },
			"5s", "7s", "1s"},
		{"RECONNECT_TIMES", WithReconnect(7*time.Second, 2), func(s *settings) string { return itoa(s.cfg.Global.ReconnectTimes) },
			"100", "9", "2"},
		{"BUFFER_SIZE", WithBufferSize(5), func(s *settings) string { return itoa(s.cfg.Global.BufferSize) },
			"16384", "333", "5"},
		{"MAX_IN_FLIGHT", WithMaxInFlight(6), func(s *settings) string { return itoa(s.cfg.Global.MaxInFlight) },
			"8192", "44", "6"},
		{"BUFFER_BYTES", WithBufferBytes(7), func(s *settings) string { return itoa(s.cfg.Global.BufferBytes) },
			"67108864", "5555", "7"},
		{"MAX_IN_FLIGHT_BYTES", WithMaxInFlightBytes(8), func(s *settings) string { return itoa(s.cfg.Global.MaxInFlightBytes) },
			"67108864", "6666", "8"},
		{"JOURNAL", WithJournal("/tmp/journal-opt"), func(s *settings) string { return s.cfg.Global.Journal },
			"", "/tmp/journal-from-file", "/tmp/journal-opt"},
		{"spool folder (FOLDER)", WithSpoolDir("/tmp/opt"), func(s *settings) string {
			if s.spoolDir != "" {
				return s.spoolDir
			}
			return s.cfg.Log.Folder
		}, "./log/", "/tmp/from-file/", "/tmp/opt"},
		{"EXCHANGE, EXCHANGE_TYPE, EXCHANGE_DURABLE", WithExchange("opt.x", "fanout", false), func(s *settings) string {
			t := pub(s)
			return t.exchange + " " + t.kind + " " + boolStr(t.durable)
		}, "omqs.default.asyncPublisher.exchange topic false", "file.x direct true", "opt.x fanout false"},
		{"QUEUE", WithQueue("opt.q"), func(s *settings) string { return pub(s).queue },
			"omqs.default.asyncPublisher.queue", "file.q", "opt.q"},
		{"QUEUE_DURABLE", WithQueueDurable(false), func(s *settings) string { return boolStr(pub(s).queueDurable) },
			"false", "true", "false"},
		{"ROUTING_KEY", WithKeys("opt.k"), func(s *settings) string { return strings.Join(pub(s).keys, ",") },
			"omqs.default.asyncPublisher.key", "file.k1,file.k2", "opt.k"},
	}
	// Every lookup of the file: $OMQS_CONFIG, ./OMQS.cfg, WithConfigFile.
	lookups := []struct {
		name string
		prep func(t *testing.T) []Option
	}{
		{"$OMQS_CONFIG", func(t *testing.T) []Option { t.Setenv("OMQS_CONFIG", path); return nil }},
		{"./OMQS.cfg", func(t *testing.T) []Option { t.Setenv("OMQS_CONFIG", ""); t.Chdir(dir); return nil }},
		{"WithConfigFile", func(t *testing.T) []Option { t.Setenv("OMQS_CONFIG", ""); return []Option{WithConfigFile(path)} }},
	}
	for _, st := range settingsTable {
		t.Run(st.name+"/default", func(t *testing.T) {
			t.Setenv("OMQS_CONFIG", "")
			t.Chdir(t.TempDir())
			s, err := rule.build("test", nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.get(s); got != st.def {
				t.Fatalf("default %q, want %q", got, st.def)
			}
		})
		for _, lk := range lookups {
			t.Run(st.name+"/file via "+lk.name, func(t *testing.T) {
				opts := lk.prep(t)
				s, err := rule.build("test", opts)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.get(s); got != st.fromFile {
					t.Fatalf("from the file %q, want %q", got, st.fromFile)
				}
				s, err = rule.build("test", append(opts, st.opt))
				if err != nil {
					t.Fatal(err)
				}
				if got := st.get(s); got != st.o {
					t.Fatalf("with the option %q, want %q", got, st.o)
				}
			})
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// ctorCase builds one constructor's value and returns its Stop.
type ctorCase struct {
	name  string
	build func(opts ...Option) (stop func(context.Context) error, err error)
}

var allConstructors = []ctorCase{
	{"NewManager", func(o ...Option) (func(context.Context) error, error) {
		m, err := NewManager(o...)
		if err != nil {
			return nil, err
		}
		return m.Stop, nil
	}},
	{"NewSyncPublisher", func(o ...Option) (func(context.Context) error, error) {
		p, err := NewSyncPublisher(o...)
		if err != nil {
			return nil, err
		}
		return p.Stop, nil
	}},
	{"NewAsyncPublisher", func(o ...Option) (func(context.Context) error, error) {
		p, err := NewAsyncPublisher(o...)
		if err != nil {
			return nil, err
		}
		return p.Stop, nil
	}},
	{"NewSyncConsumer", func(o ...Option) (func(context.Context) error, error) {
		c, err := NewSyncConsumer(o...)
		if err != nil {
			return nil, err
		}
		return c.Stop, nil
	}},
	{"NewAsyncConsumer", func(o ...Option) (func(context.Context) error, error) {
		c, err := NewAsyncConsumer(o...)
		if err != nil {
			return nil, err
		}
		return c.Stop, nil
	}},
	{"NewLogMsgConsumer", func(o ...Option) (func(context.Context) error, error) {
		c, err := NewLogMsgConsumer(nil, o...)
		if err != nil {
			return nil, err
		}
		return c.Stop, nil
	}},
	{"NewEventMsgConsumer", func(o ...Option) (func(context.Context) error, error) {
		c, err := NewEventMsgConsumer(o...)
		if err != nil {
			return nil, err
		}
		return c.Stop, nil
	}},
}

// wantInvalidConfig fails the test unless err wraps ErrInvalidConfig and
// reads "omqs: <ctor>: invalid configuration: ..." with every part of want.
func wantInvalidConfig(t *testing.T, ctor string, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("%s: err = %v, want ErrInvalidConfig", ctor, err)
	}
	if prefix := "omqs: " + ctor + ": invalid configuration: "; !strings.HasPrefix(err.Error(), prefix) {
		t.Fatalf("%s: err = %q, want it to start with %q", ctor, err, prefix)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: err = %q, want it to say %q", ctor, err, w)
		}
	}
}

// Each constructor reads only its own kind of section: publishers the six
// publisher sections, consumers LogConsumer and EventConsumer, the Manager
// none. Any other is refused, naming the constructor, the option and the
// section; none falls back to another section.
func TestConstructorsRefuseWrongSections(t *testing.T) {
	publisher := []string{"AsyncPublisher", "SyncPublisher", "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter", "SyncRouter"}
	consumer := []string{"LogConsumer", "EventConsumer"}
	accepts := map[string][]string{
		"NewManager":          nil,
		"NewSyncPublisher":    publisher,
		"NewAsyncPublisher":   publisher,
		"NewSyncConsumer":     consumer,
		"NewAsyncConsumer":    consumer,
		"NewLogMsgConsumer":   consumer,
		"NewEventMsgConsumer": consumer,
	}
	all := append(append([]string{"Nope", "Global", "Log", "LogWorker"}, publisher...), consumer...)
	for _, c := range allConstructors {
		for _, sec := range all {
			t.Run(c.name+"/"+sec, func(t *testing.T) {
				stop, err := c.build(WithConfig(DefaultConfig()), WithURL("memory://sections"), WithLogger(testLogger(t)), WithSection(sec))
				if !slices.Contains(accepts[c.name], sec) {
					if c.name == "NewManager" {
						wantInvalidConfig(t, c.name, err, `WithSection("`+sec+`") does not apply to NewManager`)
						return
					}
					wantInvalidConfig(t, c.name, err, `WithSection("`+sec+`"): `+c.name+" reads one of the sections")
					return
				}
				if err != nil {
					t.Fatalf("%s(WithSection(%q)): %v", c.name, sec, err)
				}
				if err := stop(context.Background()); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// A quorum queue must be durable: publishers, consumers and the Manager's
// workers refuse a non-durable one alike, and accept a durable one.
func TestQuorumQueueMustBeDurable(t *testing.T) {
	quorum := func(durable bool) []Option {
		return []Option{WithConfig(DefaultConfig()), WithQueue("q"), WithQueueType("quorum"), WithQueueDurable(durable)}
	}
	workers := func(durable bool) []Option {
		cfg := DefaultConfig()
		cfg.EventWorker.Queue, cfg.EventWorker.QueueType, cfg.EventWorker.QueueDurable = "q", "quorum", durable
		return []Option{WithConfig(cfg)}
	}
	for _, c := range allConstructors {
		if c.name == "NewEventMsgConsumer" {
			continue // its queue is always durable: WithQueueDurable(false) is refused for that
		}
		opts := quorum
		if c.name == "NewManager" {
			opts = workers
		}
		t.Run(c.name, func(t *testing.T) {
			base := []Option{WithURL("memory://quorum"), WithLogger(testLogger(t))}
			_, err := c.build(append(base, opts(false)...)...)
			wantInvalidConfig(t, c.name, err, `queue "`, "a quorum queue must be durable")
			stop, err := c.build(append(base, opts(true)...)...)
			if err != nil {
				t.Fatalf("durable quorum queue: %v", err)
			}
			if err := stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every option is in the table of at least one constructor under its own
// name, and every name in the table is an option; a constructor refuses
// exactly the options its row does not list, naming itself, the option and
// its value.
func TestOptionTable(t *testing.T) {
	w := &blockingWorker{release: closedChan()}
	every := []Option{
		WithConfig(DefaultConfig()), WithConfigFile("/does/not/matter"), WithURL("memory://table"), WithName("n"),
		WithLogger(testLogger(t)), WithTLSConfig(&tls.Config{}), WithReconnect(time.Second, 1),
		WithBufferSize(2), WithMaxInFlight(2), WithOverflow(OverflowWait), WithLogWorker(w), WithEventWorker(w),
		WithRetryOnFailedConnect(true), WithReturnHandler(func(Returned) {}), WithErrorHandler(func(error) {}),
		WithSpoolDir(t.TempDir()), WithAppID("a"), WithSection("LogConsumer"), WithExchange("x", "topic", true),
		WithQueue("q"), WithQueueDurable(true), WithQueueType("classic"), WithKeys("k"), WithMandatory(true),
		WithQueueConfig(QueueConfig{Queue: "q", DeadLetterExchange: "d", MessageTTL: time.Second, MaxLength: 3}),
		WithNoAck(true), WithPrefetch(3), WithConcurrency(1), WithCallback(func(context.Context, Delivery) error { return nil }),
		WithDeadLetterExchange("dlx"), WithMaxRedeliveries(2), WithDeliveryLimit(0),
		WithBufferBytes(1024), WithMaxInFlightBytes(1024), WithMaxBodySize(1024), WithObserver(nil),
		WithDedup(16, time.Minute), WithQueueExpires(time.Minute),
		WithJournal(t.TempDir()),
	}
	names := map[string]bool{}
	for _, o := range every {
		names[o.name] = true
	}
	for ctor, r := range ctorRules {
		for _, n := range r.options {
			if !names[n] {
				t.Errorf("%s's row lists %q, which is no option (or this test misses it)", ctor, n)
			}
		}
	}
	for _, o := range every {
		in := false
		for _, r := range ctorRules {
			in = in || slices.Contains(r.options, o.name)
		}
		if !in {
			t.Errorf("%s is accepted by no constructor", o.label())
		}
	}
	if got := WithExchange("x", "fanout", false).label(); got != `WithExchange("x", "fanout", false)` {
		t.Errorf("label %s", got)
	}
	if got := WithURL("amqp://u:s3cr3t@h/").label(); strings.Contains(got, "s3cr3t") {
		t.Errorf("label %s shows the password", got)
	}
	for _, c := range allConstructors {
		for _, o := range every {
			if o.name == "WithConfigFile" || o.name == "WithSection" {
				continue // a file that is not there; sections have their own test
			}
			stop, err := c.build(WithConfig(DefaultConfig()), WithURL("memory://table"), WithLogger(testLogger(t)), o)
			if err == nil {
				if err := stop(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			refused := err != nil && strings.Contains(err.Error(), "does not apply to")
			if want := !slices.Contains(ctorRules[c.name].options, o.name); refused != want {
				t.Errorf("%s(%s): err = %v; refused as not applying: %v, want %v", c.name, o.label(), err, refused, want)
			}
			if refused {
				wantInvalidConfig(t, c.name, err, o.label()+" does not apply to "+c.name)
			}
		}
	}
}
