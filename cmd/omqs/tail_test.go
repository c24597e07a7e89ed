package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// tailProc is a running omqs tail.
type tailProc struct {
	stdout, stderr *lineReader
	wait           func() (int, error)
	signal         func(os.Signal) error
}

// startTail starts omqs with args and waits until it says it is watching.
func startTail(t *testing.T, args ...string) *tailProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := newCmd(t, ctx, runOpts{}, args...)
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &tailProc{stdout: readLines(outPipe), stderr: readLines(errPipe), signal: cmd.Process.Signal}
	waited := false
	p.wait = func() (int, error) {
		// The pipes must be read to their end before Wait closes them.
		<-p.stdout.done
		<-p.stderr.done
		waited = true
		err := cmd.Wait()
		cancel()
		return cmd.ProcessState.ExitCode(), err
	}
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			p.wait()
		}
	})
	p.stderr.waitFor(t, "the watching notice", func(lines []string) bool {
		return len(lines) > 0 && strings.Contains(lines[len(lines)-1], "watching exchange")
	})
	return p
}

// stop sends sig and wants exit status 0.
func (p *tailProc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.signal(sig); err != nil {
		t.Fatal(err)
	}
	code, _ := p.wait()
	if code != 0 {
		t.Errorf("omqs tail exited with status %d after %v; stderr:\n%s", code, sig, strings.Join(p.stderr.all(), "\n"))
	}
}

func TestTail(t *testing.T) {
	s := brokerSetup(t)
	ch := brokertest.Channel(t)
	tail := startTail(t, "--config", s.cfg, "tail")

	wantCode(t, runOmqs(t, runOpts{}, "--config", s.cfg, "send", "first"), 0)
	wantCode(t, runOmqs(t, runOpts{}, "--config", s.cfg, "send", "--event", s.eventKey, "two\nlines"), 0)
	lines := tail.stdout.waitFor(t, "two messages", func(l []string) bool { return len(l) >= 2 })
	for i, want := range []string{"first", `"two\nlines"`} {
		f := strings.SplitN(lines[i], " ", 4)
		if len(f) != 4 || f[1] != s.eventKey || f[2] == "-" || f[3] != want {
			t.Errorf("line %d: %q, want TIME %s ID %s", i, lines[i], s.eventKey, want)
			continue
		}
		if _, err := time.Parse(time.RFC3339, f[0]); err != nil {
			t.Errorf("line %d: time %q: %v", i, f[0], err)
		}
	}
	tail.stop(t, os.Interrupt)
	// It took nothing from the event queue's consumers.
	depth(t, ch, s.eventQ, 2)
}

func TestTailLogKeysJSON(t *testing.T) {
	s := brokerSetup(t)
	tail := startTail(t, "--config", s.cfg, "tail", "--log", "--keys", "error, fatal", "--json")
	for _, lv := range []string{"info", "error", "debug", "fatal"} {
		wantCode(t, runOmqs(t, runOpts{}, "--config", s.cfg, "send", "--log", lv, "--header", "lv="+lv, lv+" message"), 0)
	}
	lines := tail.stdout.waitFor(t, "two log records", func(l []string) bool { return len(l) >= 2 })
	for i, lv := range []string{"error", "fatal"} {
		var m jsonMessage
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatalf("line %q: %v", lines[i], err)
		}
		if m.Key != lv || m.Exchange != s.logX || m.Body == nil || *m.Body != lv+" message" || m.ID == "" || m.Time == nil || m.Headers["lv"] != lv {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
	tail.stop(t, syscall.SIGTERM)
	if lines := tail.stdout.all(); len(lines) != 2 {
		t.Errorf("printed %d lines, want only error and fatal:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

func TestTailErrors(t *testing.T) {
	r := runOmqs(t, runOpts{}, "--url", "memory://", "tail")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs tail: memory:// is the in-process broker")

	s := brokerSetup(t)
	bad := strings.Replace(s.url, "guest:guest@", "guest:wrongpass@", 1)
	if bad == s.url {
		t.Skip("the test broker's URL has no guest:guest credentials to spoil")
	}
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "--url", bad, "tail")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs tail: ", "connection failed")
	wantNotContains(t, "output", r.stdout+r.stderr, "wrongpass")
}
