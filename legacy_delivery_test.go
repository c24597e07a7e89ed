package omqs

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestDeliveryFromLegacyProducer: what a consumer sees of messages
// published as the Python original published them (no properties on events;
// text/plain, delivery mode 1 on logs; the "EOF" of its stop()), beside
// those of OMQS for Go.
func TestDeliveryFromLegacyProducer(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testDeliveryFromLegacyProducer)
}

func testDeliveryFromLegacyProducer(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	rec := &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(rec.callback))...)
	waitUntil(t, 10*time.Second, "the consumer is ready", r.c.Ready)

	ch := backendChannel(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []amqp.Publishing{
		{Body: []byte("python event")},
		{ContentType: "text/plain", DeliveryMode: amqp.Transient, Body: []byte("python log")},
		{Body: []byte("EOF")},
	} {
		if err := ch.PublishWithContext(ctx, n.Exchange, n.Key, false, false, p); err != nil {
			t.Fatal(err)
		}
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "go", "EOF")
	waitUntil(t, 10*time.Second, "five deliveries", func() bool { return rec.len() >= 5 })
	stopNow(t, r)

	type view struct {
		mode       uint8
		persistent bool
		eof        bool
		noID       bool
	}
	want := map[string][]view{
		"python event": {{0, false, false, true}},
		"python log":   {{1, false, false, true}},
		"EOF":          {{0, false, true, true}, {2, true, false, false}},
		"go":           {{2, true, false, false}},
	}
	got := map[string][]view{}
	for _, d := range rec.all() {
		got[string(d.Body)] = append(got[string(d.Body)], view{d.DeliveryMode, d.Persistent(), d.IsLegacyEOF(), d.MessageID == ""})
	}
	for body, ws := range want {
		g := got[body]
		if len(g) != len(ws) {
			t.Errorf("%q: got %+v, want %+v", body, g, ws)
			continue
		}
		for _, w := range ws {
			found := false
			for _, v := range g {
				found = found || v == w
			}
			if !found {
				t.Errorf("%q: got %+v, want one %+v", body, g, w)
			}
		}
	}
	for _, d := range rec.all() {
		if string(d.Body) == "python log" && d.ContentType != "text/plain" {
			t.Errorf("python log: content type %q", d.ContentType)
		}
	}
}
