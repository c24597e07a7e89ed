package omqs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// probe asks h and returns the status code and the body.
func probe(t *testing.T, h http.Handler, query string) (int, []Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz"+query, nil))
	var body struct {
		Status     string   `json:"status"`
		Components []Health `json:"components"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if (rec.Code == http.StatusOK) != (body.Status == "ok") {
		t.Errorf("code %d with status %q", rec.Code, body.Status)
	}
	return rec.Code, body.Components
}

func TestHealthHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, n := backendConfig(t, url)
		m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
			WithExchange(n.Exchange, "topic", false), WithQueue(""))
		if err != nil {
			t.Fatal(err)
		}
		q := n.Queue + ".health"
		cleanupOn(t, url, nil, []string{q})
		c, err := NewSyncConsumer(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
			WithExchange(n.Exchange, "topic", false), WithQueue(q), WithKeys("#"),
			WithCallback(func(context.Context, Delivery) error { return nil }))
		if err != nil {
			t.Fatal(err)
		}
		h := HealthHandler(m, p, c)

		code, comps := probe(t, h, "")
		if code != http.StatusServiceUnavailable || len(comps) != 3 {
			t.Fatalf("before start: %d %+v", code, comps)
		}
		for _, ch := range comps {
			if ch.Ready || ch.Problem == "" {
				t.Errorf("before start: %+v", ch)
			}
		}
		if comps[0].Kind != "Manager" || comps[1].Kind != "AsyncPublisher" || comps[2].Kind != "SyncConsumer" {
			t.Errorf("kinds %+v", comps)
		}

		ctx := testCtx(t, 20*time.Second)
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		startRun(t, c)
		code, comps = probe(t, h, "")
		if code != http.StatusOK {
			t.Fatalf("running: %d %+v", code, comps)
		}
		for _, ch := range comps {
			if !ch.Ready || !ch.Live || !ch.Connected || ch.Problem != "" {
				t.Errorf("running: %+v", ch)
			}
		}
		if code, _ := probe(t, h, "?probe=live"); code != http.StatusOK {
			t.Errorf("liveness while running: %d", code)
		}

		if err := p.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		code, comps = probe(t, h, "")
		if code != http.StatusServiceUnavailable || comps[1].Ready || comps[1].Live || comps[1].Problem != "stopped" || !comps[0].Ready {
			t.Errorf("publisher stopped: %d %+v", code, comps)
		}
		if code, _ := probe(t, h, "?probe=live"); code != http.StatusServiceUnavailable {
			t.Errorf("liveness with a stopped publisher: %d", code)
		}
		if err := m.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if hm := m.Health(); hm.Live || hm.Ready {
			t.Errorf("Manager after Stop: %+v", hm)
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if hc := c.Health(); hc.Live || hc.Ready || hc.Connected {
			t.Errorf("consumer after Stop: %+v", hc)
		}
	})
}
