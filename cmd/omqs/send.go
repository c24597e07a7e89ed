package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omqs-go/omqs"
)

var sendHelp = helpText{
	usage: "omqs send [--log LEVEL | --event KEY] [--header NAME=VALUE]... [--timeout D] [--quiet] (MESSAGE | -)",
	about: `Publishes MESSAGE as an event (to the [EventWorker] exchange, omqs.exchange.event
by default) or, with --log, as a log record (to the [LogWorker] exchange,
omqs.exchange.log), with the topology, persistence and publisher confirms of the
library's workers. With "-" every line of standard input is one message (empty
lines are skipped); on a terminal a progress line shows on standard error.

Events are published mandatory: an event no queue is bound to receive is
returned by the broker and counts as not delivered. Nothing is written to the
spool: what the broker does not confirm is reported.

The exit status is 0 when the broker confirmed every message, 1 otherwise.`,
	examples: `  omqs send 'user 42 signed in'
  omqs send --event email_notification '{"email":"someone@example.com"}'
  omqs send --log error 'disk full on web-3'
  omqs send --header tenant=acme --header trace=abc123 hello
  journalctl -o cat -u myapp | omqs send --log info -
`,
}

// headerFlags collects --header NAME=VALUE.
type headerFlags map[string]any

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("header %q is not NAME=VALUE", s)
	}
	h[name] = value
	return nil
}

func cmdSend(e *env, args []string) error {
	fs := e.flags("send")
	logKey := fs.String("log", "", "send a log record with this `LEVEL` (routing key): fatal, error, warning, info or debug")
	eventKey := fs.String("event", "", "send an event with this routing `KEY` (default: the first KEYS of [EventWorker], omqs.key.event)")
	headers := headerFlags{}
	fs.Var(headers, "header", "add the AMQP header `NAME=VALUE` to every message (repeatable)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to try to connect, and to wait for the last confirms")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	pos, err := e.parse(fs, sendHelp, args)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if set["log"] && set["event"] {
		return usagef("give --log or --event, not both")
	}
	if set["log"] && strings.TrimSpace(*logKey) == "" {
		return usagef("--log needs a level: fatal, error, warning, info or debug")
	}
	switch len(pos) {
	case 0:
		return usagef("no message given: give MESSAGE, or - to read one message per line of standard input")
	case 1:
	default:
		return usagef("%d arguments given: give one MESSAGE (quote it), or - to read standard input", len(pos))
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	l, err := e.load()
	if err != nil {
		return err
	}
	if l.isMemory() {
		fmt.Fprintf(e.stderr, "%s: note: %s is the in-process broker of this command; what it receives is gone when the command ends\n", e.cmd, l.cfg.Global.MQURL)
	}

	lane, w, key := "event", l.cfg.EventWorker, *eventKey
	if set["log"] {
		lane, w, key = "log", l.cfg.LogWorker, *logKey
	} else if key == "" {
		key = omqs.DefaultEventKey
		if len(w.Keys) > 0 {
			key = w.Keys[0]
		}
	}

	var (
		retMu       sync.Mutex
		returned    int64
		returnedKey string
	)
	opts := append(workerOptions(w),
		omqs.WithConfig(l.cfg),
		omqs.WithName("omqs send"),
		omqs.WithLogger(e.logger()),
		omqs.WithMandatory(lane == "event"),
		omqs.WithReturnHandler(func(r omqs.Returned) {
			retMu.Lock()
			defer retMu.Unlock()
			if returned == 0 {
				returnedKey = r.Key
			}
			returned++
		}),
	)
	pub, err := omqs.NewAsyncPublisher(opts...)
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(e.ctx, *timeout)
	err = pub.Start(startCtx)
	cancel()
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), *timeout)
		pub.Stop(stopCtx)
		cancel()
		if e.ctx.Err() != nil {
			return interrupted{"interrupted while connecting; nothing was sent"}
		}
		return fmt.Errorf("connect: %w", err)
	}

	var sent, bad atomic.Int64
	var firstBad error
	publish := func(body []byte) bool {
		msg := omqs.Message{Key: key, Body: body}
		if len(headers) > 0 {
			msg.Headers = headers
		}
		err := pub.PublishMessage(e.ctx, msg)
		switch {
		case err == nil:
			sent.Add(1)
		case e.ctx.Err() != nil:
			return false
		default:
			if firstBad == nil {
				firstBad = err
			}
			bad.Add(1)
		}
		return true
	}

	var readErr error
	if pos[0] == "-" {
		bar := startProgress(e.stderr, 500*time.Millisecond, func() string {
			return fmt.Sprintf("sent %d, confirmed %d", sent.Load(), pub.Stats().Confirmed)
		})
		lines, quit, readDone := readInput(e.stdin)
	loop:
		for {
			select {
			case <-e.ctx.Done():
				break loop
			case line, ok := <-lines:
				if !ok {
					readErr = *readDone
					break loop
				}
				if !publish(line) {
					break loop
				}
			}
		}
		close(quit)
		bar.end()
	} else {
		publish([]byte(pos[0]))
	}

	stopCtx, cancel := context.WithTimeout(context.Background(), *timeout)
	stopErr := pub.Stop(stopCtx)
	cancel()
	st := pub.Stats()

	n := sent.Load()
	confirmed := min(int64(st.Confirmed), n)
	retMu.Lock()
	ret := returned
	retMu.Unlock()
	var problems []string
	if readErr != nil {
		problems = append(problems, fmt.Sprintf("reading standard input: %v", readErr))
	}
	if b := bad.Load(); b > 0 {
		problems = append(problems, fmt.Sprintf("%d message(s) refused before sending (first: %v)", b, firstBad))
	}
	if confirmed < n {
		problems = append(problems, fmt.Sprintf("%d of %d message(s) not confirmed by the broker", n-confirmed, n))
	}
	if ret > 0 {
		problems = append(problems, fmt.Sprintf("%d event(s) returned as unroutable: no queue is bound to key %q on exchange %q", ret, returnedKey, w.Exchange))
	}
	if stopErr != nil && confirmed == n {
		problems = append(problems, stopErr.Error())
	}
	if e.ctx.Err() != nil {
		return interrupted{fmt.Sprintf("interrupted: %d message(s) sent, %d confirmed%s", n, confirmed, joinProblems(problems))}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	if !*quiet {
		fmt.Fprintf(e.stdout, "%d %s confirmed (exchange %q, key %q)\n", n, plural(n, "message", "messages"), w.Exchange, key)
	}
	return nil
}

// readInput reads the lines of r on a goroutine, so that SIGINT ends send
// even while standard input has nothing to read; empty lines are skipped and
// a final "\r" is removed. The channel is closed at the end of the input,
// after *err was set to the read error, if any. Closing quit makes the
// goroutine return once it has a line to hand over; one blocked reading
// a terminal returns only when the process exits.
func readInput(r io.Reader) (lines <-chan []byte, quit chan struct{}, err *error) {
	ch := make(chan []byte, 256)
	quit = make(chan struct{})
	err = new(error)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), omqs.MaxBodySize+1)
		for sc.Scan() {
			line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
			if len(line) == 0 {
				continue
			}
			select {
			case ch <- bytes.Clone(line):
			case <-quit:
				return
			}
		}
		*err = sc.Err()
	}()
	return ch, quit, err
}

func joinProblems(p []string) string {
	if len(p) == 0 {
		return ""
	}
	return "; " + strings.Join(p, "; ")
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// workerOptions gives a publisher the topology of a Manager's worker, so that
// omqs publishes where the library's workers do and declares the same.
func workerOptions(w omqs.WorkerConfig) []omqs.Option {
	return []omqs.Option{
		omqs.WithExchange(w.Exchange, w.ExchangeType, w.ExchangeDurable),
		omqs.WithQueueConfig(w.QueueConfig()),
		omqs.WithKeys(w.Keys...),
	}
}
