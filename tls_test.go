package omqs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faultproxy"
	"github.com/omqs-go/omqs/internal/testcerts"
)

// tlsProxy puts a TLS-terminating proxy in front of the test broker.
func tlsProxy(t *testing.T, brokerURL string, cfg *tls.Config) string {
	t.Helper()
	u, err := amqp.ParseURI(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.NewTLS(fmt.Sprintf("%s:%d", u.Host, u.Port), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p.Addr()
}

func amqpsURL(user, addr string, params url.Values) string {
	s := "amqps://" + user + "@" + addr + "/"
	if len(params) > 0 {
		s += "?" + params.Encode()
	}
	return s
}

// TestTLS runs on RabbitMQ only (behind a TLS-terminating proxy): the
// in-process broker has no network, hence no TLS.
func TestTLS(t *testing.T) {
	brokerURL := brokertest.URL(t)
	certs, err := testcerts.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := testcerts.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plain := tlsProxy(t, brokerURL, certs.ServerTLS(false))
	mutual := tlsProxy(t, brokerURL, certs.ServerTLS(true))

	cases := []struct {
		name    string
		url     string
		opts    []Option
		wantErr string
	}{
		{name: "trusted CA from the URL", url: amqpsURL("guest:guest", plain, url.Values{"cacertfile": {certs.CAFile}})},
		{name: "server_name_indication", url: amqpsURL("guest:guest", plain, url.Values{"cacertfile": {certs.CAFile}, "server_name_indication": {"localhost"}})},
		{name: "untrusted CA", url: amqpsURL("guest:guest", plain, url.Values{"cacertfile": {other.CAFile}}), wantErr: "certificate"},
		{name: "client certificate", url: amqpsURL("guest:guest", mutual, url.Values{"cacertfile": {certs.CAFile}, "certfile": {certs.ClientCert}, "keyfile": {certs.ClientKey}})},
		{name: "client certificate missing", url: amqpsURL("guest:guest", mutual, url.Values{"cacertfile": {certs.CAFile}}), wantErr: "connection failed"},
		{name: "WithTLSConfig", url: amqpsURL("guest:guest", mutual, nil), opts: []Option{WithTLSConfig(&tls.Config{
			RootCAs: certs.CAPool, Certificates: []tls.Certificate{certs.Client}, MinVersion: tls.VersionTLS12,
		})}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, n := testConfig(t)
			opts := append([]Option{WithConfig(cfg), WithURL(c.url), WithReconnect(20*time.Millisecond, 2), WithLogger(testLogger(t))}, c.opts...)
			m, err := NewManager(opts...)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = m.Start(testCtx(t, 30*time.Second))
			defer m.Stop(context.Background())
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Start: %v, want an error containing %q", err, c.wantErr)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("failing took %v", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := m.SendEvent("over tls", ""); err != nil {
				t.Fatal(err)
			}
			if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			wantDepth(t, brokerURL, n.Queue, 1)
		})
	}
}

func TestTLSBadFilesAreConfigErrors(t *testing.T) {
	for _, u := range []string{
		"amqps://guest:guest@localhost:5671/?cacertfile=/does/not/exist.pem",
		"amqps://guest:guest@localhost:5671/?certfile=/x.pem",
		"amqp://guest:guest@localhost:5672/?cacertfile=/x.pem",
	} {
		_, err := NewManager(WithURL(u))
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", u, err)
		}
	}
}
