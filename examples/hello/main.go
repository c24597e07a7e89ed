// Command hello shows OMQS working in one process: a Manager sends events and
// log records, an EventMsgConsumer and a LogMsgConsumer print what they
// receive, and everything stops cleanly once all of it arrived.
//
// It needs nothing but Go: by default it runs on the in-process broker.
//
//	go run ./examples/hello
//	go run ./examples/hello -url amqp://guest:guest@localhost:5672/
//	OMQS_MQURL=amqp://guest:guest@localhost:5672/ go run ./examples/hello
//
// Both consumers read private queues of their own (server-named, exclusive,
// deleted when the program ends), bound to the event and log exchanges: on a
// broker that other services share, the program sees copies of what flows
// through those exchanges and takes nothing from the queues other consumers
// read, such as the tutorial's shared "omqs.queue.event".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omqs-go/omqs"
)

func main() {
	mqurl := flag.String("url", envOr("OMQS_MQURL", "memory://"), "broker URL (default: $OMQS_MQURL, else the in-process broker memory://)")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for the messages to arrive")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *mqurl, *timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

// What the program sends.
var (
	events = []string{"Hello world", "Hello again"}
	logs   = []struct{ level, text string }{
		{omqs.KeyInfo, "hello from the log lane"},
		{omqs.KeyWarning, "the disk is 91% full"},
		{omqs.KeyError, "the mail server did not answer"},
	}
)

const eventKey = "HelloKey"

// run sends the events and logs on the broker at mqurl, prints what the
// consumers receive to out, and returns once everything arrived and every
// part stopped, or with an error saying what went wrong (within timeout).
func run(ctx context.Context, mqurl string, timeout time.Duration, out io.Writer) (err error) {
	if strings.HasPrefix(mqurl, "memory://") {
		fmt.Fprintf(out, "running on the in-process broker (%s); pass -url amqp://guest:guest@localhost:5672/ or set OMQS_MQURL to use RabbitMQ\n", mqurl)
	} else {
		fmt.Fprintf(out, "running on %s\n", redact(mqurl))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The library's own log lines: warnings and errors only, on stderr.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The app id tells this run's messages from others a shared broker holds.
	appID := fmt.Sprintf("omqs-hello-%d-%d", os.Getpid(), time.Now().UnixNano())
	p := &printer{out: out, appID: appID}

	eventConsumer, err := omqs.NewEventMsgConsumer(omqs.WithURL(mqurl), omqs.WithName("hello-events"),
		omqs.WithLogger(quiet), omqs.WithQueue(""), omqs.WithKeys(eventKey), omqs.WithCallback(p.event))
	if err != nil {
		return err
	}
	logConsumer, err := omqs.NewLogMsgConsumer([]string{"#"}, omqs.WithURL(mqurl), omqs.WithName("hello-logs"),
		omqs.WithLogger(quiet), omqs.WithQueue(""), omqs.WithCallback(p.log))
	if err != nil {
		return err
	}
	consumers := []consumer{
		{name: "event consumer", c: eventConsumer},
		{name: "log consumer", c: logConsumer},
	}
	for i := range consumers {
		consumers[i].start()
	}
	defer func() {
		if serr := stopAll(consumers); err == nil {
			err = serr
		}
	}()
	if err := waitReady(ctx, consumers, mqurl, timeout); err != nil {
		return err
	}

	m, err := omqs.NewManager(omqs.WithURL(mqurl), omqs.WithName("hello"), omqs.WithLogger(quiet), omqs.WithAppID(appID))
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	sendErr := send(m)
	stopCtx, stopCancel := context.WithTimeout(context.Background(), timeout)
	defer stopCancel()
	if err := m.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop the manager: %w", err)
	}
	if sendErr != nil {
		return sendErr
	}

	if err := p.waitAll(ctx); err != nil {
		return err
	}
	if err := stopAll(consumers); err != nil {
		return err
	}
	fmt.Fprintf(out, "received %d events and %d logs; stopped cleanly\n", len(events), len(logs))
	return nil
}

// send hands every event and log to the Manager.
func send(m *omqs.Manager) error {
	for _, e := range events {
		if err := m.SendEvent(e, eventKey); err != nil {
			return err
		}
	}
	for _, l := range logs {
		if err := m.SendLog(l.text, l.level); err != nil {
			return err
		}
	}
	return nil
}

// consumer is one of the program's consumers and its Run in the background.
type consumer struct {
	name string
	c    interface {
		Run(ctx context.Context) error
		Stop(ctx context.Context) error
		Ready() bool
	}
	done chan struct{}
	err  error
	once sync.Once
	serr error
}

func (c *consumer) start() {
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		c.err = c.c.Run(context.Background())
	}()
}

// stop stops the consumer once and returns what Stop and Run reported.
func (c *consumer) stop() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.c.Stop(ctx); err != nil {
			c.serr = fmt.Errorf("stop the %s: %w", c.name, err)
			return
		}
		<-c.done
		if c.err != nil {
			c.serr = fmt.Errorf("%s: %w", c.name, c.err)
		}
	})
	return c.serr
}

func stopAll(cs []consumer) error {
	var first error
	for i := range cs {
		if err := cs[i].stop(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// waitReady waits until every consumer consumes, so that nothing sent is
// unroutable.
func waitReady(ctx context.Context, cs []consumer, mqurl string, timeout time.Duration) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range cs {
		for !cs[i].c.Ready() {
			select {
			case <-cs[i].done:
				return fmt.Errorf("%s: %w", cs[i].name, cs[i].err)
			case <-ctx.Done():
				return fmt.Errorf("the %s was not consuming within %v (does the broker at %s answer?): %w",
					cs[i].name, timeout, redact(mqurl), ctx.Err())
			case <-tick.C:
			}
		}
	}
	return nil
}

// printer prints deliveries and counts this run's.
type printer struct {
	out   io.Writer
	appID string

	mu             sync.Mutex
	nEvents, nLogs int
	changed        chan struct{} // closed and replaced on each count
}

func (p *printer) event(_ context.Context, d omqs.Delivery) error {
	p.print(d, "event", &p.nEvents)
	return nil
}

func (p *printer) log(_ context.Context, d omqs.Delivery) error {
	p.print(d, "log", &p.nLogs)
	return nil
}

func (p *printer) print(d omqs.Delivery, what string, n *int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d.AppID != p.appID {
		fmt.Fprintf(p.out, " [ ] %s %s: %q (not sent by this run)\n", what, d.RoutingKey, d.Body)
		return
	}
	fmt.Fprintf(p.out, " [x] %s %s: %q\n", what, d.RoutingKey, d.Body)
	*n++
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// waitAll waits until every event and log sent has been received.
func (p *printer) waitAll(ctx context.Context) error {
	for {
		p.mu.Lock()
		ne, nl := p.nEvents, p.nLogs
		if ne >= len(events) && nl >= len(logs) {
			p.mu.Unlock()
			return nil
		}
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("received %d of %d events and %d of %d logs before the time ran out: %w",
				ne, len(events), nl, len(logs), ctx.Err())
		}
	}
}

// redact hides the password of a broker URL.
func redact(s string) string {
	var parts []string
	for _, one := range strings.Split(s, ",") {
		one = strings.TrimSpace(one)
		if u, err := url.Parse(one); err == nil {
			one = u.Redacted()
		} else {
			one = "(a URL that does not parse)"
		}
		parts = append(parts, one)
	}
	return strings.Join(parts, ", ")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
