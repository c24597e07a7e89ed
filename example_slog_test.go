package omqs_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/omqs-go/omqs"
)

// An application's slog records shipped through the Manager's log lane, and
// read back by a LogMsgConsumer: the routing key follows the level, the
// body is the record as JSON, and a URL's password is masked.
func ExampleManager_SlogHandler() {
	const url = "memory://example-slog" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	got := make(chan omqs.Delivery, 2)
	c, err := omqs.NewLogMsgConsumer([]string{"#"}, omqs.WithURL(url),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			got <- d
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	m, err := omqs.NewManager(omqs.WithURL(url), omqs.WithName("shop"))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for !c.Ready() { // the consumer's queue is bound once it is ready
		select {
		case <-ctx.Done():
			log.Fatal(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}

	logger := slog.New(m.SlogHandler(nil)) // or slog.SetDefault(logger)
	logger.Info("user signed in", "user", 42)
	logger.With("request", "r-17").WithGroup("payment").
		Error("refused", "amount", 9.5, "provider", "https://shop:s3cret@psp.example/")

	for range 2 {
		d := <-got
		body := d.Body[bytes.Index(d.Body, []byte(`"level"`)):] // the time left out
		fmt.Printf("%s: {%s\n", d.RoutingKey, body)
	}
	if err := m.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// info: {"level":"INFO","msg":"user signed in","logger":"shop","user":42}
	// error: {"level":"ERROR","msg":"refused","logger":"shop","request":"r-17","payment":{"amount":9.5,"provider":"https://shop:xxxxx@psp.example/"}}
}
