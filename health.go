package omqs

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"

	"github.com/omqs-go/omqs/internal/spool"
)

// Health is what a Manager, a publisher or a consumer reports to a health
// probe.
//
// Live is false once the component stopped, or failed for good (a consumer
// whose Run returned); a liveness probe that fails restarts the process.
// Ready is true when the component can do its work now: it runs, is
// connected with its topology declared, the broker does not block it, and
// its spool is empty or being replayed. Problem says why it is not ready.
type Health struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Live      bool   `json:"live"`
	Ready     bool   `json:"ready"`
	Connected bool   `json:"connected"`
	Blocked   bool   `json:"blocked,omitempty"`
	Spooled   bool   `json:"spooled,omitempty"`   // the spool holds messages
	Replaying bool   `json:"replaying,omitempty"` // they are being replayed
	Problem   string `json:"problem,omitempty"`
}

// HealthReporter is implemented by *Manager, *SyncPublisher,
// *AsyncPublisher and the four consumer types.
type HealthReporter interface {
	Health() Health
}

// HealthHandler answers health probes for components: 200 when every one
// is ready, 503 otherwise, with a JSON body listing each component's Health.
// With the query parameter probe=live it checks liveness instead (every
// component live). It is safe for concurrent use; each request reads the
// components' state afresh.
//
//	mux.Handle("/readyz", omqs.HealthHandler(m, consumer))
//	// livenessProbe: /readyz?probe=live
func HealthHandler(components ...HealthReporter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		live := r.URL.Query().Get("probe") == "live"
		body := struct {
			Status     string   `json:"status"`
			Components []Health `json:"components"`
		}{Status: "ok", Components: make([]Health, 0, len(components))}
		code := http.StatusOK
		for _, c := range components {
			h := c.Health()
			if (live && !h.Live) || (!live && !h.Ready) {
				code, body.Status = http.StatusServiceUnavailable, "unavailable"
			}
			body.Components = append(body.Components, h)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// Health reports the Manager's health: live from Start until Stop, ready
// while both lanes are (a built-in worker connected, not blocked, its spool
// empty or replaying).
func (m *Manager) Health() Health {
	h := Health{Kind: "Manager", Name: m.name, Connected: true}
	st := managerState(m.state.Load())
	h.Live = st == mgrStarting || st == mgrRunning
	var problems []string
	if st != mgrRunning {
		problems = append(problems, managerStateNames[st])
	}
	for _, l := range m.lanes {
		bw, ok := l.worker.(interface{ engineOf() *engine })
		if !ok || bw.engineOf() == nil {
			continue // a custom worker: nothing to ask
		}
		eh := bw.engineOf().health()
		h.Connected = h.Connected && eh.Connected
		h.Blocked = h.Blocked || eh.Blocked
		h.Spooled = h.Spooled || eh.Spooled
		h.Replaying = h.Replaying || eh.Replaying
		if eh.Problem != "" && st == mgrRunning {
			problems = append(problems, l.name+" lane: "+eh.Problem)
		}
	}
	h.Problem = strings.Join(problems, "; ")
	h.Ready = h.Problem == ""
	return h
}

var managerStateNames = map[managerState]string{
	mgrNew: "not started", mgrStarting: "starting", mgrRunning: "running", mgrStopping: "stopping", mgrStopped: "stopped",
}

// Health reports the publisher's health; see Health.
func (p *SyncPublisher) Health() Health { return p.e.health() }

// Health reports the publisher's health; see Health.
func (p *AsyncPublisher) Health() Health { return p.e.health() }

// health is a publishing engine's Health.
func (e *engine) health() Health {
	e.mu.Lock()
	st, up, blocked, replaying := e.state, e.sess != nil, e.blocked, e.replaying
	e.mu.Unlock()
	h := Health{Kind: e.kind, Name: e.name, Blocked: blocked, Replaying: replaying}
	h.Connected = st == stateUp && up
	h.Live = st > stateNew && st < stateStopping
	h.Spooled = spoolHolds(e.sp)
	switch {
	case st == stateNew:
		h.Problem = "not started"
	case st >= stateStopping:
		h.Problem = "stopped"
	case st == stateSpooling:
		h.Problem = "broker unreachable; spooling"
	case !h.Connected:
		h.Problem = "connecting"
	case blocked:
		h.Problem = "the broker blocks publishing"
	case h.Spooled && !replaying:
		h.Problem = "spooled messages wait for replay"
	}
	h.Ready = h.Problem == ""
	return h
}

// spoolHolds reports whether sp has messages in its file or replay files.
func spoolHolds(sp *spool.Spool) bool {
	if sp == nil {
		return false
	}
	if fi, err := os.Stat(sp.Path()); err == nil && fi.Size() > 0 {
		return true
	}
	files, err := sp.Pending()
	return err == nil && len(files) > 0
}

// Health reports the consumer's health: live while Run runs (or has not
// been called yet), ready while it is subscribed.
func (c *consumer) Health() Health {
	if c == nil {
		return Health{Problem: "zero consumer"}
	}
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	kind, _, _ := strings.Cut(c.who, " ")
	h := Health{Kind: kind, Name: c.name, Connected: c.ready.Load()}
	h.Live = st != consumerDone
	switch {
	case st == consumerNew:
		h.Problem = "not running"
	case st == consumerDone:
		h.Problem = "stopped"
	case !h.Connected:
		h.Problem = "connecting"
	}
	h.Ready = h.Problem == ""
	return h
}
