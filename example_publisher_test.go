package omqs_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/omqs-go/omqs"
)

// printDeliveries runs a consumer of the queue "orders" (bound with key to
// the exchange "shop", as the publishers below declare them) until it has
// printed n deliveries, then stops it. The queue must hold exactly n: the
// callback waits until its delivery is printed.
func printDeliveries(ctx context.Context, url, key string, n int) {
	got := make(chan omqs.Delivery)
	c, err := omqs.NewSyncConsumer(omqs.WithURL(url),
		omqs.WithExchange("shop", "topic", true),
		omqs.WithQueue("orders"), omqs.WithQueueDurable(true),
		omqs.WithKeys(key),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			got <- d
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for range n {
		d := <-got
		fmt.Printf("received %s: %s\n", d.RoutingKey, d.Body)
	}
	if err := c.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
}

// A SyncPublisher's Publish returns once the broker has confirmed the message
// (or refused it, or it was spooled). It declares the exchange "shop" and the
// durable queue "orders" bound to it with "order.created", the key of a
// Publish with key "".
func ExampleNewSyncPublisher() {
	const url = "memory://example-sync-publisher" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := omqs.NewSyncPublisher(omqs.WithURL(url),
		omqs.WithExchange("shop", "topic", true),
		omqs.WithQueue("orders"), omqs.WithQueueDurable(true),
		omqs.WithKeys("order.created"))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for _, order := range []string{"order 1001", "order 1002"} {
		if err := p.Publish(ctx, "", []byte(order)); err != nil {
			log.Fatal(err)
		}
		fmt.Println("confirmed:", order)
	}
	if err := p.Stop(ctx); err != nil {
		log.Fatal(err)
	}

	printDeliveries(ctx, url, "order.created", 2)
	// Output:
	// confirmed: order 1001
	// confirmed: order 1002
	// received order.created: order 1001
	// received order.created: order 1002
}

// An AsyncPublisher's Publish returns once the message is written; the
// confirms come in the background, and Flush waits for them.
func ExampleNewAsyncPublisher() {
	const url = "memory://example-async-publisher" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := omqs.NewAsyncPublisher(omqs.WithURL(url),
		omqs.WithExchange("shop", "topic", true),
		omqs.WithQueue("orders"), omqs.WithQueueDurable(true),
		omqs.WithKeys("order.*"))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for _, order := range []string{"order 1001", "order 1002", "order 1003"} {
		if err := p.Publish(ctx, "order.created", []byte(order)); err != nil {
			log.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil { // every message so far is confirmed
		log.Fatal(err)
	}
	fmt.Println("confirmed:", p.Stats().Confirmed, "pending:", p.Pending())
	if err := p.Stop(ctx); err != nil {
		log.Fatal(err)
	}

	printDeliveries(ctx, url, "order.*", 3)
	// Output:
	// confirmed: 3 pending: 0
	// received order.created: order 1001
	// received order.created: order 1002
	// received order.created: order 1003
}
