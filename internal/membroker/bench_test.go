package membroker

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishConsume publishes in confirm mode to a queue that a
// consumer drains with manual acks, keeping at most 4096 messages between
// publisher and consumer.
func BenchmarkPublishConsume(b *testing.B) {
	br := Get("bench-" + b.Name())
	defer br.Reset()
	pc, _ := br.Dial()
	cc, _ := br.Dial()
	defer pc.Close()
	defer cc.Close()
	pch, _ := pc.Channel()
	cch, _ := cc.Channel()
	if _, err := pch.QueueDeclare("bench", false, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 8192))
	if err := cch.Qos(1024, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := cch.Consume("bench", "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	window := make(chan struct{}, 4096)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for i := 0; i < b.N; i++ {
			d := <-deliveries
			if err := d.Ack(false); err != nil {
				b.Error(err)
				return
			}
			<-window
		}
	}()
	confirmed := make(chan int)
	go func() {
		nacks := 0
		for i := 0; i < b.N; i++ {
			if c := <-confirms; !c.Ack {
				nacks++
			}
		}
		confirmed <- nacks
	}()
	body := []byte("a message of about fifty bytes, like a log record")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		window <- struct{}{}
		if err := pch.PublishWithContext(ctx, "", "bench", false, false, amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent}); err != nil {
			b.Fatal(err)
		}
	}
	<-consumed
	if n := <-confirmed; n > 0 {
		b.Fatalf("%d nacks", n)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
