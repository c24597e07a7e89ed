package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// brokerUser adds a RabbitMQ user with full rights on "/" for the test.
func brokerUser(t *testing.T, user, password string) {
	t.Helper()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		if brokertest.Required() {
			t.Fatal("rabbitmqctl is needed to add a test user")
		}
		t.Skip("rabbitmqctl not found: cannot add a test user")
	}
	run := func(args ...string) error {
		out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v: %s", args[0], err, out)
		}
		return nil
	}
	if err := run("add_user", user, password); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("delete_user", user); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	if err := run("set_permissions", "-p", "/", user, ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
}

// TestNoPasswordIsEverPrinted runs a whole session with a known password —
// a Manager through a proxy that cuts the connection, a consumer whose
// callback panics with the URL, failing starts, configuration dumps — and
// searches everything the library printed or returned for the password.
func TestNoPasswordIsEverPrinted(t *testing.T) {
	base := brokertest.URL(t)
	const password = "Pw-7c1e9b2f-secret"
	user := brokertest.Unique("omqs-secret-test")
	brokerUser(t, user, password)
	bu, err := amqp.ParseURI(base)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, base)
	authURL := func(host string, port int, vhost string) string {
		return fmt.Sprintf("amqp://%s:%s@%s:%d/%s", user, url.PathEscape(password), host, port, url.PathEscape(vhost))
	}
	direct := authURL(bu.Host, bu.Port, "")
	viaProxy := authURL("127.0.0.1", atoiPort(p.Addr()), "")

	var printed []string
	logs := &lockedbuf.Buffer{}
	lm, err := NewLogManager("secrets", "", WithLogConfig(DefaultConfig().Log), WithLogOutput(logs), WithLogLevel("DEBUG"))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	// A plain slog handler the user might pass: the library must redact for it too.
	userLogs := &lockedbuf.Buffer{}
	userLogger := slog.New(slog.NewJSONHandler(userLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var handlerErrs []string
	var hmu sync.Mutex
	onErr := func(err error) {
		hmu.Lock()
		handlerErrs = append(handlerErrs, err.Error())
		hmu.Unlock()
	}

	cfg, n := testConfig(t)
	cfg.Global.MQURL = viaProxy
	printed = append(printed, cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg.Global), fmt.Sprintf("%v", *cfg))

	for _, logger := range []*slog.Logger{lm.Logger(), userLogger} {
		m, err := NewManager(WithConfig(cfg), WithLogger(logger), WithErrorHandler(onErr), WithReconnect(20*time.Millisecond, 50))
		if err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 30*time.Second)
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		received := make(chan struct{}, 100)
		c, err := NewEventMsgConsumer(WithConfig(cfg), WithURL(direct), WithQueue(n.Queue+".c"), WithKeys(n.Key),
			WithExchange(cfg.EventWorker.Exchange, "topic", true), WithLogger(logger), WithErrorHandler(onErr),
			WithCallback(func(_ context.Context, d Delivery) error {
				received <- struct{}{}
				if string(d.Body) == "panic" {
					panic("callback failed talking to " + direct)
				}
				return fmt.Errorf("cannot handle it at %s", direct)
			}))
		if err != nil {
			t.Fatal(err)
		}
		brokertest.Cleanup(t, nil, []string{n.Queue + ".c"})
		cctx, stopConsumer := context.WithCancel(ctx)
		runErr := make(chan error, 1)
		go func() { runErr <- c.Run(cctx) }()
		waitUntil(t, 10*time.Second, "consumer ready", c.Ready)
		for _, body := range []string{"one", "panic", "two"} {
			if err := m.SendEvent(body, ""); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 3; i++ {
			select {
			case <-received:
			case <-ctx.Done():
				t.Fatal("callbacks did not run")
			}
		}
		p.Cut() // reconnect messages name the URL
		waitUntil(t, 10*time.Second, "reconnect", func() bool { return m.Stats().Reconnects >= 2 })
		printed = append(printed, fmt.Sprintf("%+v", m.Stats()))
		if err := m.Stop(ctx); err != nil {
			printed = append(printed, err.Error())
		}
		stopConsumer()
		if err := <-runErr; err != nil {
			printed = append(printed, err.Error())
		}
		c.Stop(ctx)
	}

	// Failures that carry the URL: wrong password, missing vhost, bad URLs.
	for _, u := range []string{
		strings.Replace(direct, url.PathEscape(password), "wrong-"+url.PathEscape(password), 1),
		authURL(bu.Host, bu.Port, "no-such-vhost"),
	} {
		m, err := NewManager(WithConfig(cfg), WithURL(u), WithLogger(lm.Logger()), WithReconnect(10*time.Millisecond, 1))
		if err != nil {
			t.Fatal(err)
		}
		err = m.Start(testCtx(t, 20*time.Second))
		if err == nil {
			t.Fatalf("Start with %s succeeded", RedactedURL(u))
		}
		printed = append(printed, err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err))
		m.Stop(context.Background())
	}
	for _, u := range []string{
		"amqp://" + user + ":" + password + "@host:notaport/",
		"amqp://" + user + ":" + password + "@host/?bogus=1",
		"ftp://" + user + ":" + password + "@host/",
		"amqp://" + user + ":" + password + ",@host/",
	} {
		if _, err := NewManager(WithURL(u)); err != nil {
			printed = append(printed, err.Error())
		} else {
			t.Errorf("NewManager(WithURL(<bad URL>)) succeeded")
		}
		if _, err := NewSyncConsumer(WithURL(u)); err != nil {
			printed = append(printed, err.Error())
		}
	}
	printed = append(printed, RedactedURL(direct).String(), logs.String(), userLogs.String())
	hmu.Lock()
	printed = append(printed, handlerErrs...)
	hmu.Unlock()

	all := strings.Join(printed, "\n")
	if !strings.Contains(all, "callback panicked") || !strings.Contains(all, "xxxxx") {
		t.Fatalf("the session did not print what it should have (panic, redacted URLs):\n%s", all)
	}
	for _, secret := range []string{password, url.PathEscape(password), url.QueryEscape(password)} {
		if i := strings.Index(all, secret); i >= 0 {
			lo, hi := max(0, i-200), min(len(all), i+100)
			t.Fatalf("password printed: ...%s...", all[lo:hi])
		}
	}
}

func TestStartFailsOnMissingVhost(t *testing.T) {
	base := brokertest.URL(t)
	u, err := amqp.ParseURI(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Vhost = "omqs-no-such-vhost"
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL(u.String()), WithLogger(testLogger(t)), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = m.Start(testCtx(t, 30*time.Second))
	if !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), "vhost") {
		t.Fatalf("Start: %v, want ErrConnection naming the vhost", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	m.Stop(context.Background())
}

func TestBadSizesAndNils(t *testing.T) {
	cases := map[string]Option{
		"WithBufferSize(0)":          WithBufferSize(0),
		"WithBufferSize(-1)":         WithBufferSize(-1),
		"WithMaxInFlight(0)":         WithMaxInFlight(0),
		"WithReconnect(-1s, 1)":      WithReconnect(-time.Second, 1),
		"WithReconnect(1s, -1)":      WithReconnect(time.Second, -1),
		"WithLogWorker(nil)":         WithLogWorker(nil),
		"WithEventWorker(nil)":       WithEventWorker(nil),
		"WithLogger(nil)":            WithLogger(nil),
		"WithConfig(nil)":            WithConfig(nil),
		"WithTLSConfig(nil)":         WithTLSConfig(nil),
		"WithOverflow(7)":            WithOverflow(7),
		"WithSpoolDir(\"\")":         WithSpoolDir(""),
		"WithConfigFile(missing)":    WithConfigFile("/does/not/exist/OMQS.cfg"),
		"zero Option":                {},
		"consumer option on Manager": WithConcurrency(2),
	}
	for name, o := range cases {
		m, err := NewManager(o)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: NewManager = %v, %v; want ErrInvalidConfig", name, m, err)
		}
	}
	long := strings.Repeat("k", MaxKeyLen+1)
	for name, o := range map[string]Option{
		"WithKeys(long)":                   WithKeys(long),
		"WithExchange(long)":               WithExchange(long, "topic", true),
		"WithExchange(kind)":               WithExchange("x", "bogus", true),
		"WithQueueType(bogus)":             WithQueueType("stream-ish"),
		"WithSection(bogus)":               WithSection("Nope"),
		"WithMaxInFlight(-3) on publisher": WithMaxInFlight(-3),
	} {
		if _, err := NewAsyncPublisher(o); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: NewAsyncPublisher: %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestOversizedMessagesAreRefused(t *testing.T) {
	ew := &blockingWorker{release: closedChan()}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://oversized"), WithLogWorker(ew), WithEventWorker(ew), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("x", MaxBodySize+1)
	if err := m.SendEvent(huge, "k"); !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized SendEvent: %v", err)
	}
	if err := m.SendEvent("fine", "k"); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(ew.got) != 1 {
		t.Fatalf("worker got %d messages, want the 1 valid one", len(ew.got))
	}
	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL("memory://oversized"), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), "k", []byte(huge)); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("oversized Publish: %v", err)
	}
	if err := p.Stop(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}
