package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/omqs-go/omqs"
)

var tailHelp = helpText{
	usage: "omqs tail [--log] [--keys PATTERN,...] [--json]",
	about: `Prints every message that flows through the event exchange (the [EventWorker]
EXCHANGE, omqs.exchange.event by default) or, with --log, the log exchange
([LogWorker] EXCHANGE, omqs.exchange.log), one line each:

  TIME ROUTING-KEY MESSAGE-ID BODY

TIME is the message's timestamp, a body that is not one line of printable text
is quoted. With --json each message is one JSON object instead, with time,
exchange, key, id, app_id, content_type, headers, redelivered and body (or body64 for a body
that is not UTF-8).

It takes nothing from other consumers: it reads a queue of its own, exclusive
and server-named, that the broker deletes when omqs tail ends. Only messages
published while it runs are printed. It runs until Ctrl-C (SIGINT) or SIGTERM,
then exits with status 0.`,
	examples: `  omqs tail
  omqs tail --log --keys error,fatal
  omqs tail --keys 'email_*,omqs.key.event' --json | jq .body
`,
}

func cmdTail(e *env, args []string) error {
	fs := e.flags("tail")
	logLane := fs.Bool("log", false, "watch the log exchange instead of the event exchange")
	keys := fs.String("keys", "#", "comma-separated topic `PATTERNs` to watch: '#' is everything, '*' one word")
	asJSON := fs.Bool("json", false, "print one JSON object per message")
	pos, err := e.parse(fs, tailHelp, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	var patterns []string
	for _, k := range strings.Split(*keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			patterns = append(patterns, k)
		}
	}
	if len(patterns) == 0 {
		return usagef("--keys is empty; give topic patterns such as '#' or 'error,fatal'")
	}
	l, err := e.load()
	if err != nil {
		return err
	}
	if l.isMemory() {
		return fmt.Errorf("%s is the in-process broker of this command: no other program publishes to it; give an amqp:// URL with --url", l.cfg.Global.MQURL)
	}
	w := l.cfg.EventWorker
	if *logLane {
		w = l.cfg.LogWorker
	}

	print := func(_ context.Context, d omqs.Delivery) error {
		if *asJSON {
			return writeJSON(e, tailRecord(d))
		}
		_, err := fmt.Fprintf(e.stdout, "%s %s %s %s\n", stampSeconds(d.Timestamp), dash(d.RoutingKey), dash(d.MessageID), printable(d.Body))
		return err
	}
	c, err := omqs.NewSyncConsumer(
		omqs.WithConfig(l.cfg),
		omqs.WithName("omqs tail"),
		omqs.WithLogger(e.logger()),
		omqs.WithExchange(w.Exchange, w.ExchangeType, w.ExchangeDurable),
		omqs.WithQueue(""),
		omqs.WithQueueDurable(false),
		omqs.WithKeys(patterns...),
		omqs.WithPrefetch(256),
		omqs.WithMaxRedeliveries(0),
		omqs.WithCallback(print),
	)
	if err != nil {
		return err
	}

	// Say on standard error when the queue is bound, so that a person (or a
	// test) knows from when on messages are printed.
	runDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-runDone:
				return
			case <-tick.C:
				if c.Ready() {
					fmt.Fprintf(e.stderr, "%s: watching exchange %q with keys %s; Ctrl-C to stop\n", e.cmd, w.Exchange, strings.Join(patterns, ","))
					return
				}
			}
		}
	}()
	err = c.Run(e.ctx)
	close(runDone)
	wg.Wait()
	return err
}

// jsonMessage is a message as tail --json and spool show --json print it.
type jsonMessage struct {
	File        string         `json:"file,omitempty"`
	Line        int            `json:"line,omitempty"`
	Unreadable  bool           `json:"unreadable,omitempty"`
	Text        string         `json:"text,omitempty"` // of an unreadable line
	Time        *time.Time     `json:"time,omitempty"`
	Exchange    string         `json:"exchange,omitempty"`
	Key         string         `json:"key,omitempty"`
	ID          string         `json:"id,omitempty"`
	AppID       string         `json:"app_id,omitempty"`
	ContentType string         `json:"content_type,omitempty"`
	Headers     map[string]any `json:"headers,omitempty"`
	Redelivered bool           `json:"redelivered,omitempty"`
	Body        *string        `json:"body,omitempty"`
	Body64      string         `json:"body64,omitempty"`
}

func (m *jsonMessage) setBody(b []byte) {
	if utf8.Valid(b) {
		s := string(b)
		m.Body = &s
	} else {
		m.Body64 = base64.StdEncoding.EncodeToString(b)
	}
}

func tailRecord(d omqs.Delivery) jsonMessage {
	m := jsonMessage{Exchange: d.Exchange, Key: d.RoutingKey, ID: d.MessageID, AppID: d.AppID, ContentType: d.ContentType, Headers: jsonHeaders(d.Headers), Redelivered: d.Redelivered}
	if !d.Timestamp.IsZero() {
		t := d.Timestamp
		m.Time = &t
	}
	m.setBody(d.Body)
	return m
}

func writeJSON(e *env, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(append(b, '\n'))
	return err
}

// jsonHeaders returns h with the values JSON cannot carry written as text.
func jsonHeaders(h map[string]any) map[string]any {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]any, len(h))
	for k, v := range h {
		if _, err := json.Marshal(v); err != nil {
			v = fmt.Sprint(v)
		}
		out[k] = v
	}
	return out
}
