package faulttest_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/faulttest"
)

// matrixFaults are the rows of the fault matrix, for each path.
var matrixFaults = []faultSpec{
	{name: "connection kills ×3", kind: faultKill, at: []float64{0.2, 0.45, 0.7}},
	// RECONNECT_TIMES 5 (1s): the publishers give up during the restart,
	// spool, and replay the spool once the broker is back.
	{name: "broker restart", kind: faultRestart, at: []float64{0.35}, hold: 2 * time.Second, reconnectTimes: 5},
	{name: "network cut ×2", kind: faultCut, at: []float64{0.3, 0.6}, hold: time.Second},
	{name: "stall (heartbeat 2s)", kind: faultStall, at: []float64{0.35}},
	{name: "slow link (20ms/chunk, 3s)", kind: faultSlow, at: []float64{0.3}, hold: 3 * time.Second, slow: 20 * time.Millisecond},
	{name: "memory alarm (3s)", kind: faultAlarm, at: []float64{0.35}, hold: 3 * time.Second},
}

var matrixPaths = []pathKind{pathLog, pathEvent, pathConsumer}

// TestFaultMatrix streams messages through the log path, the event path and
// a consumer while each fault hits, and reports for each case what was sent,
// accepted, delivered (unique message ids), delivered twice, lost (which
// must be none) and how long the client took to recover. The Markdown table
// goes to the test log and, with OMQS_FAULT_TABLE=path, to that file.
//
//	OMQS_FAULT_TESTS=1 go test -run TestFaultMatrix -v -p 1 ./internal/faulttest/
func TestFaultMatrix(t *testing.T) {
	faulttest.Require(t)
	n := envInt(t, "OMQS_FAULT_MESSAGES", 50000)
	var rows []result
	for _, f := range matrixFaults {
		for _, p := range matrixPaths {
			t.Run(fmt.Sprintf("%s/%s", p, f.name), func(t *testing.T) {
				r := runStream(t, streamOpts{path: p, fault: f, n: n, size: 100})
				rows = append(rows, r)
				t.Logf("%s", row(r))
			})
		}
	}
	table := matrixTable(n, rows)
	t.Logf("fault matrix:\n%s", table)
	if path := os.Getenv("OMQS_FAULT_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
}

func matrixTable(n int, rows []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages of 100 bytes per case; %d CPUs", n, runtime.NumCPU())
	if raceEnabled {
		b.WriteString("; built with -race")
	}
	if faulttest.OwnOnly() {
		b.WriteString("; kills closed only the tests' own connections (OMQS_FAULT_OWN_ONLY=1)")
	}
	b.WriteString(".\n\n")
	b.WriteString("- sent: Send*Context calls; accepted: those that returned nil.\n")
	b.WriteString("- delivered: distinct message ids that reached the queue's consumer; duplicates: deliveries beyond the first; lost: accepted − delivered.\n")
	b.WriteString("- seen by callbacks: on the consumer path (WithDedup on), the duplicates that reached the callback; the rest were dropped by the de-duplication window.\n")
	b.WriteString("- recover: from the fault's start to the first confirm (for the consumer path, delivery) after it, one figure per injection: on a new connection for kills, restart, cut and stall; once the alarm cleared for the memory alarm; through the slowed link for the slow link.\n\n")
	b.WriteString("| path | fault | sent | accepted | delivered (unique) | duplicates | duplicates seen by callbacks (de-dup on) | lost | recover | notes |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		b.WriteString(row(r))
		b.WriteByte('\n')
	}
	return b.String()
}

func row(r result) string {
	recs := make([]string, len(r.recover))
	for i, d := range r.recover {
		recs[i] = fmt.Sprintf("%.2fs", d.Seconds())
	}
	acc := fmt.Sprint(r.accepted)
	if r.refused > 0 {
		acc += fmt.Sprintf(" (%d refused)", r.refused)
	}
	cb := "–"
	if r.cbDup >= 0 {
		cb = fmt.Sprint(r.cbDup)
	}
	return fmt.Sprintf("| %s | %s | %d | %s | %d | %d | %s | %d | %s | %s, %.0fs |",
		r.path, r.fault, r.sent, acc, r.delivered, r.duplicates, cb, r.lost, strings.Join(recs, ", "), r.notes, r.elapsed.Seconds())
}
