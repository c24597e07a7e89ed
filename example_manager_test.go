package omqs_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/omqs-go/omqs"
)

// A Manager on the in-process broker: the web backend's side sends, and an
// EventMsgConsumer (a worker program's side) prints the events. Stop returns
// once the broker confirmed every accepted message, so the events wait in the
// durable queue "omqs.queue.event", which the Manager declared, until the
// consumer takes them.
func ExampleNewManager() {
	const url = "memory://example-manager" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m, err := omqs.NewManager(omqs.WithURL(url))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		log.Fatal(err)
	}
	m.SendInfo("user 42 signed in") // returns at once; never waits on the network
	m.SendEvent(`{"user":42,"email":"someone@example.com"}`, "")
	m.SendEvent(`{"user":43,"email":"someone.else@example.com"}`, "")
	if err := m.Stop(ctx); err != nil { // drains and waits for the confirms
		log.Fatal(err)
	}
	st := m.Stats()
	fmt.Printf("confirmed: %d log, %d events\n", st.Logs.Confirmed, st.Events.Confirmed)

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
	for range 2 {
		d := <-got
		fmt.Printf("%s: %s\n", d.RoutingKey, d.Body)
	}
	if err := c.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// confirmed: 1 log, 2 events
	// omqs.key.event: {"user":42,"email":"someone@example.com"}
	// omqs.key.event: {"user":43,"email":"someone.else@example.com"}
}
