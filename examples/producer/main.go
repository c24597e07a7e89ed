// Command producer is the sending half of the tutorial's "Hello world": it
// starts a Manager, sends the event "Hello world" with the key "HelloKey" and
// stops the Manager, which waits until the broker has confirmed the event.
//
// Start examples/consumer first: it binds the event queue to "HelloKey" (the
// binding stays, and the durable queue keeps events while no consumer runs).
// An event no queue is bound to is returned by the broker and reported.
//
//	go run ./examples/producer -url amqp://guest:guest@localhost:5672/
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/omqs-go/omqs"
)

func main() {
	url := flag.String("url", os.Getenv("OMQS_MQURL"), "broker URL (default: $OMQS_MQURL, else MQURL of OMQS.cfg)")
	flag.Parse()
	if err := run(*url); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func run(url string) error {
	lm, err := omqs.NewLogManager("producer", "producer.log")
	if err != nil {
		return err
	}
	defer lm.Close()
	logger := lm.Logger()

	opts := []omqs.Option{omqs.WithName("producer"), omqs.WithLogger(logger)}
	if url != "" {
		opts = append(opts, omqs.WithURL(url))
	}
	logger.Info("starting the manager")
	m, err := omqs.NewManager(opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		return err
	}

	logger.Info("sending the message")
	sendErr := m.SendEvent("Hello world", "HelloKey")

	logger.Info("shutting down the manager")
	if err := m.Stop(ctx); err != nil {
		return err
	}
	return sendErr
}
