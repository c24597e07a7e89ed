package omqs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/omqs-go/omqs"
)

// HostWorker is the built-in event worker with one change: every event
// carries a header naming the host that sent it. It keeps everything else of
// the built-in worker: confirms, republishing, the spool, Stats and Pending.
type HostWorker struct {
	*omqs.EventMsgWorker
	Host string
}

// MsgDidReceive stamps the header and hands the event to the built-in worker.
func (w *HostWorker) MsgDidReceive(ctx context.Context, msg omqs.Message) error {
	msg.Headers = map[string]any{"x-host": w.Host}
	return w.EventMsgWorker.MsgDidReceive(ctx, msg)
}

// A custom worker that wraps the built-in one: the Manager configures the
// embedded EventMsgWorker as it would its own.
func ExampleEventMsgWorker() {
	const url = "memory://example-worker" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	host, _ := os.Hostname()
	m, err := omqs.NewManager(omqs.WithURL(url),
		omqs.WithEventWorker(&HostWorker{EventMsgWorker: omqs.NewEventMsgWorker(), Host: host}))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		log.Fatal(err)
	}
	m.SendEvent("user 42 signed up", "")
	if err := m.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("events confirmed:", m.Stats().Events.Confirmed)

	got := make(chan omqs.Delivery)
	c, err := omqs.NewEventMsgConsumer(omqs.WithURL(url),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			got <- d
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	d := <-got
	fmt.Printf("%s (stamped by this host: %v)\n", d.Body, d.Headers["x-host"] == host)
	if err := c.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// events confirmed: 1
	// user 42 signed up (stamped by this host: true)
}
