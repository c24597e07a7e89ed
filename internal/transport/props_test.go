package transport

import (
	"context"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

func TestServerPropertiesMemory(t *testing.T) {
	eps, err := ParseURLs("memory://" + t.Name())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), eps[0], DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseDeadline(time.Now().Add(time.Second))
	if p := ServerProperties(c); p != nil {
		t.Errorf("in-process broker: %v, want nil", p)
	}
}

func TestServerPropertiesRabbitMQ(t *testing.T) {
	eps, err := ParseURLs(brokertest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, eps[0], DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseDeadline(time.Now().Add(5 * time.Second))
	p := ServerProperties(c)
	if v, ok := p["version"].(string); !ok || v == "" {
		t.Errorf("version = %#v, want the broker's version", p["version"])
	}
	if p["product"] != "RabbitMQ" {
		t.Errorf("product = %#v, want RabbitMQ", p["product"])
	}
}
