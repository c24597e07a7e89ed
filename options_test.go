package omqs

import (
	"os"
	"path/filepath"
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
	pub := func(s *settings) topology { return publisherTopology(s, "AsyncPublisher") }
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
			"1024", "44", "6"},
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
			s, err := buildSettings(forPublisher|forManager, "test", nil)
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
				s, err := buildSettings(forPublisher|forManager, "test", opts)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.get(s); got != st.fromFile {
					t.Fatalf("from the file %q, want %q", got, st.fromFile)
				}
				s, err = buildSettings(forPublisher|forManager, "test", append(opts, st.opt))
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
