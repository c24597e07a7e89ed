// Command consumer is the receiving half of the tutorial's "Hello world": an
// EventMsgConsumer bound to the key "HelloKey" that prints every event it
// receives, until Ctrl-C or SIGTERM.
//
//	go run ./examples/consumer -url amqp://guest:guest@localhost:5672/
//
// It reads a durable queue of its own, "omqs.example.consumer" (-queue names
// another), so that events sent while it is down wait for it, and it takes
// nothing from the queue other services' workers share ("omqs.queue.event").
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/omqs-go/omqs"
)

func main() {
	url := flag.String("url", os.Getenv("OMQS_MQURL"), "broker URL (default: $OMQS_MQURL, else MQURL of OMQS.cfg)")
	queue := flag.String("queue", "omqs.example.consumer", "durable queue to read, bound to HelloKey")
	flag.Parse()

	// Run returns nil once the signal arrived and the consumer has stopped:
	// the callback in flight finished and its event was acknowledged.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := []omqs.Option{
		omqs.WithName("consumer"),
		omqs.WithQueue(*queue),
		omqs.WithKeys("HelloKey"),
		omqs.WithCallback(helloCallback),
	}
	if *url != "" {
		opts = append(opts, omqs.WithURL(*url))
	}
	consumer, err := omqs.NewEventMsgConsumer(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	fmt.Println(" [*] Waiting for events. To exit press CTRL+C")
	if err := consumer.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func helloCallback(ctx context.Context, d omqs.Delivery) error {
	fmt.Printf(" [x] hello_callback: %q:%q\n", d.RoutingKey, d.Body)
	return nil
}
