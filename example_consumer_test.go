package omqs_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/omqs-go/omqs"
)

// A consumer of its own queue, bound to a topic exchange, that runs until
// Ctrl-C. Each order is acknowledged once the callback returns nil.
func ExampleNewSyncConsumer() {
	c, err := omqs.NewSyncConsumer(
		omqs.WithURL("amqp://guest:guest@localhost:5672/"),
		omqs.WithExchange("shop", "topic", true),
		omqs.WithQueue("shop.orders"),
		omqs.WithQueueDurable(true),
		omqs.WithKeys("order.*"),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			fmt.Printf("%s: %s\n", d.RoutingKey, d.Body)
			return nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := c.Run(ctx); err != nil { // blocks until Ctrl-C
		log.Fatal(err)
	}
}

var errMailServerDown = errors.New("mail server down")

func sendMail(ctx context.Context, to []byte) error { return nil }

// Sixteen callbacks at once. A transient failure puts the message back on the
// queue (at most MAX_REDELIVERIES times); Stop gives the callbacks in flight
// ten seconds to finish.
func ExampleNewAsyncConsumer() {
	c, err := omqs.NewAsyncConsumer(
		omqs.WithQueue("mail.outbox"),
		omqs.WithQueueDurable(true),
		omqs.WithKeys("mail.send"),
		omqs.WithConcurrency(16),
		omqs.WithDeadLetterExchange("mail.failed"),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			err := sendMail(ctx, d.Body)
			if errors.Is(err, errMailServerDown) {
				return omqs.Requeue(err) // try again later
			}
			return err // nil acknowledges; another error dead-letters to mail.failed
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()

	// ... later, at shutdown:
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		log.Print(err) // says how many callbacks were still running
	}
	if err := <-done; err != nil {
		log.Print(err)
	}
}

// The records of the levels "error" and "fatal" that Managers log, read from
// a queue of this program's own.
func ExampleNewLogMsgConsumer() {
	c, err := omqs.NewLogMsgConsumer([]string{"error", "fatal"},
		omqs.WithQueue("ops.alerts"),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			fmt.Printf("[%s] %s\n", d.RoutingKey, d.Body)
			return nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Events are delivered at least once: after a reconnect a callback can see an
// event again. Remembering the ids of handled events drops the duplicates.
func ExampleNewEventMsgConsumer() {
	var (
		mu   sync.Mutex
		seen = map[string]bool{} // bound it in a real program
	)
	c, err := omqs.NewEventMsgConsumer(
		omqs.WithKeys("user.signup", "user.delete"),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			mu.Lock()
			dup := seen[d.MessageID]
			seen[d.MessageID] = true
			mu.Unlock()
			if dup {
				return nil // handled before the reconnect: acknowledge again
			}
			fmt.Printf("%s: %s\n", d.RoutingKey, d.Body)
			return nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// The callback can be set, or replaced, while the consumer runs; deliveries
// that arrive before any callback is set are logged and acknowledged.
func ExampleSyncConsumer_SetCallback() {
	c, err := omqs.NewSyncConsumer(omqs.WithKeys("#"))
	if err != nil {
		log.Fatal(err)
	}
	c.SetCallback(func(ctx context.Context, d omqs.Delivery) error {
		fmt.Printf(" [x] %q:%q\n", d.RoutingKey, d.Body)
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
