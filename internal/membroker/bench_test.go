package membroker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishConsume publishes in confirm mode to a queue that a
// consumer on another connection drains with manual acks, as an
// asynchronous publisher and a consumer with a prefetch do. The publisher
// tracks confirms in a goroutine of its own and pauses while more than
// maxBacklog messages are published but not yet consumed, so the queue stays
// below its length limit.
func BenchmarkPublishConsume(b *testing.B) {
	const maxBacklog = 20000
	br := Get("bench-" + b.Name())
	defer br.Reset()
	pc, _ := br.Dial()
	cc, _ := br.Dial()
	defer pc.Close()
	defer cc.Close()
	pch, _ := pc.Channel()
	cch, _ := cc.Channel()
	if _, err := pch.QueueDeclare("bench", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	if err := cch.Qos(256, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := cch.Consume("bench", "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}

	var consumed atomic.Int64
	progress := make(chan struct{}, 1)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for i := 1; i <= b.N; i++ {
			d := <-deliveries
			if err := d.Ack(false); err != nil {
				b.Error(err)
				return
			}
			consumed.Store(int64(i))
			if i%1024 == 0 {
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
	}()
	nacks := make(chan int)
	go func() {
		n := 0
		for i := 0; i < b.N; i++ {
			if c := <-confirms; !c.Ack {
				n++
			}
		}
		nacks <- n
	}()

	body := []byte("a message of about fifty bytes, like a log record")
	msg := amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent, ContentType: "text/plain"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for int64(i)-consumed.Load() > maxBacklog {
			<-progress
		}
		if err := pch.PublishWithContext(ctx, "", "bench", false, false, msg); err != nil {
			b.Fatal(err)
		}
	}
	<-consumerDone
	if n := <-nacks; n > 0 {
		b.Fatalf("%d nacks", n)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
