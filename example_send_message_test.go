package omqs_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/omqs-go/omqs"
)

// SendEventMessage sends bytes with a content type and headers, and returns
// the message id, which the consumer sees as Delivery.MessageID;
// SendEventJSON encodes a Go value.
func ExampleManager_SendEventMessage() {
	const url = "memory://example-send-message" // or amqp://guest:guest@localhost:5672/
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m, err := omqs.NewManager(omqs.WithURL(url))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		log.Fatal(err)
	}
	id, err := m.SendEventMessage(ctx, omqs.Message{
		Body:        []byte(`{"order":42}`),
		ContentType: "application/json",
		Headers:     map[string]any{"tenant": "acme"},
	})
	if err != nil {
		log.Fatal(err)
	}
	ids := map[string]string{id: "SendEventMessage"}
	type signup struct {
		User  int    `json:"user"`
		Email string `json:"email"`
	}
	if id, err = m.SendEventJSON(ctx, "", signup{43, "someone@example.com"}); err != nil {
		log.Fatal(err)
	}
	ids[id] = "SendEventJSON"
	if err := m.Stop(ctx); err != nil {
		log.Fatal(err)
	}

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
		fmt.Printf("%s: %s %s tenant=%v\n", ids[d.MessageID], d.ContentType, d.Body, d.Headers["tenant"])
	}
	if err := c.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// SendEventMessage: application/json {"order":42} tenant=acme
	// SendEventJSON: application/json {"user":43,"email":"someone@example.com"} tenant=<nil>
}
