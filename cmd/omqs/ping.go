package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/transport"
)

var pingHelp = helpText{
	usage: "omqs ping [--timeout D]",
	about: `Connects to each broker URL of MQURL in turn (several are separated by commas),
prints the broker's product and version and how long connecting took, then
declares the exchanges (and queue and bindings) of [LogWorker] and
[EventWorker] as a Manager's workers do and prints how long that took.
Declaring what exists already changes nothing; a declaration the broker
refuses (an exchange that exists with another type) is an error.

The exit status is 0 when every URL answered and accepted the declarations,
1 otherwise: use it in scripts and health checks.`,
	examples: `  omqs ping
  omqs ping --url amqp://app:secret@mq1:5672/prod --timeout 3s
  until omqs ping >/dev/null 2>&1; do sleep 1; done
`,
}

func cmdPing(e *env, args []string) error {
	fs := e.flags("ping")
	timeout := fs.Duration("timeout", 10*time.Second, "how long each URL may take to connect and declare")
	pos, err := e.parse(fs, pingHelp, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	l, err := e.load()
	if err != nil {
		return err
	}
	eps, err := transport.ParseURLs(l.cfg.Global.MQURL)
	if err != nil {
		return err // Validate has checked it
	}
	failed := 0
	var last error
	for _, ep := range eps {
		if err := ping(e, l.cfg, ep, *timeout); err != nil {
			if e.ctx.Err() != nil {
				return interrupted{"interrupted"}
			}
			if len(eps) > 1 {
				fmt.Fprintf(e.stdout, "%s: %s\n", ep, oneLine(err.Error()))
			}
			failed++
			last = err
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(eps) == 1:
		return last
	}
	return fmt.Errorf("%d of %d brokers did not answer", failed, len(eps))
}

// ping connects to ep, reports the broker's version and the timings, and
// declares the workers' topology.
func ping(e *env, cfg *omqs.Config, ep transport.Endpoint, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	start := time.Now()
	conn, err := transport.Dial(ctx, ep, transport.DialOptions{Name: "omqs ping", Timeout: timeout})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.CloseDeadline(time.Now().Add(timeout))
	connected := time.Since(start)
	broker := "in-process broker"
	if props := transport.ServerProperties(conn); props != nil {
		broker = fmt.Sprintf("%v %v", orUnknown(props["product"]), orUnknown(props["version"]))
		if cn, ok := props["cluster_name"].(string); ok && cn != "" {
			broker += " (cluster " + cn + ")"
		}
	}

	start = time.Now()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("%s answered, but opening a channel failed: %w", broker, err)
	}
	defer ch.Close()
	done := make(chan error, 1)
	go func() {
		err := declare(ch, "LogWorker", cfg.LogWorker)
		if err == nil {
			err = declare(ch, "EventWorker", cfg.EventWorker)
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		conn.CloseDeadline(time.Now()) // ends the declaration in flight
		<-done
		err = fmt.Errorf("no answer within %v", timeout)
	}
	if err != nil {
		return fmt.Errorf("%s answered, but declaring failed: %w", broker, err)
	}
	fmt.Fprintf(e.stdout, "%s: %s, connected in %s, declared in %s\n", ep, broker, ms(connected), ms(time.Since(start)))
	return nil
}

// declare declares a worker's exchange, queue and bindings as the library's
// publishers do.
func declare(ch transport.Channel, section string, w omqs.WorkerConfig) error {
	if w.Exchange != "" {
		if err := ch.ExchangeDeclare(w.Exchange, w.ExchangeType, w.ExchangeDurable, false, false, false, nil); err != nil {
			return fmt.Errorf("[%s] exchange %q (%s, durable=%v): %w", section, w.Exchange, w.ExchangeType, w.ExchangeDurable, err)
		}
	}
	if w.Queue == "" {
		return nil
	}
	if w.DeadLetterExchange != "" {
		if err := ch.ExchangeDeclare(w.DeadLetterExchange, "fanout", true, false, false, false, nil); err != nil {
			return fmt.Errorf("[%s] dead-letter exchange %q (fanout, durable): %w", section, w.DeadLetterExchange, err)
		}
	}
	args := amqp.Table(w.QueueConfig().Arguments())
	if _, err := ch.QueueDeclare(w.Queue, w.QueueDurable, false, false, false, args); err != nil {
		return fmt.Errorf("[%s] queue %q (durable=%v): %w", section, w.Queue, w.QueueDurable, err)
	}
	if w.Exchange == "" {
		return nil
	}
	keys := w.Keys
	if len(keys) == 0 && (w.ExchangeType == "fanout" || w.ExchangeType == "headers") {
		keys = []string{""}
	}
	for _, k := range keys {
		if err := ch.QueueBind(w.Queue, k, w.Exchange, false, nil); err != nil {
			return fmt.Errorf("[%s] bind queue %q to %q with key %q: %w", section, w.Queue, w.Exchange, k, err)
		}
	}
	return nil
}

func orUnknown(v any) any {
	if v == nil {
		return "(unknown)"
	}
	return v
}

// ms formats a duration with a precision that suits it.
func ms(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}
