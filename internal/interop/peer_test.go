package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// The Python interpreter that runs peer.py, found once.
var (
	pyOnce sync.Once
	pyPath string
	pyErr  error
)

// findPython returns $OMQS_PYTHON, else the first of Debian's python3 and
// the python3 on $PATH that can import pika.
func findPython() (string, error) {
	candidates := []string{"/usr/bin/python3", "python3"}
	if p := os.Getenv("OMQS_PYTHON"); p != "" {
		candidates = []string{p}
	}
	var errs []string
	for _, c := range candidates {
		path, err := exec.LookPath(c)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, path, "-c", "import pika; print(pika.__version__)").CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s cannot import pika: %s", path, strings.TrimSpace(string(out))))
			continue
		}
		return path, nil
	}
	return "", errors.New(strings.Join(errs, "; "))
}

// python returns the interpreter for peer.py. Without one the test is
// skipped, or fails under OMQS_REQUIRE_BROKER=1 (as in CI, where .ci/run
// installs python3-pika).
func python(t *testing.T) string {
	t.Helper()
	pyOnce.Do(func() { pyPath, pyErr = findPython() })
	if pyErr != nil {
		if brokertest.Required() {
			t.Fatalf("the interop tests need python3 with pika (OMQS_REQUIRE_BROKER=1): %v; install Debian's python3-pika (apt-get install -y python3-pika) as .ci/run does, or set OMQS_PYTHON", pyErr)
		}
		t.Skipf("skipping interop test: %v; install python3-pika (apt-get install -y python3-pika) or set OMQS_PYTHON, and set OMQS_REQUIRE_BROKER=1 to make this a failure", pyErr)
	}
	return pyPath
}

// pyMsg is what peer.py's consumers print for each message of the test.
type pyMsg struct {
	Body         string `json:"body"`
	Key          string `json:"key"`
	Exchange     string `json:"exchange"`
	ContentType  string `json:"content_type"`
	DeliveryMode int    `json:"delivery_mode"`
	MessageID    string `json:"message_id"`
	Redelivered  bool   `json:"redelivered"`
	Ready        bool   `json:"ready"`
}

// runPeer runs a one-shot peer.py command and returns its output.
func runPeer(t *testing.T, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python(t), append([]string{"peer.py", url}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peer.py %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// pyConsumer is a running peer.py consumer.
type pyConsumer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	ready  chan struct{}
	done   chan struct{} // closed when its output ended
	mu     sync.Mutex
	got    []pyMsg
}

// startPyConsumer starts peer.py consume-logs or consume-events and waits
// until it consumes. It is stopped when the test ends, if not before.
func startPyConsumer(t *testing.T, url, cmd, queue, keys, marker string) *pyConsumer {
	t.Helper()
	c := &pyConsumer{ready: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command(python(t), "peer.py", url, cmd, queue, keys, marker)
	c.cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go c.read(stdout)
	t.Cleanup(func() { c.stop(t) })
	select {
	case <-c.ready:
	case <-c.done:
		c.stop(t)
		t.Fatalf("peer.py %s ended before it consumed:\n%s", cmd, c.stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("peer.py %s did not start consuming within a minute", cmd)
	}
	return c
}

func (c *pyConsumer) read(r io.Reader) {
	defer close(c.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	readyOnce := sync.Once{}
	for sc.Scan() {
		var m pyMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Ready {
			readyOnce.Do(func() { close(c.ready) })
			continue
		}
		c.mu.Lock()
		c.got = append(c.got, m)
		c.mu.Unlock()
	}
}

func (c *pyConsumer) all() []pyMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]pyMsg(nil), c.got...)
}

// stop closes the consumer's input, which makes it close its connection
// and exit, and waits for it. Stopping it twice is allowed.
func (c *pyConsumer) stop(t *testing.T) {
	t.Helper()
	if c.stdin == nil {
		return
	}
	c.stdin.Close()
	c.stdin = nil
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		t.Errorf("peer.py consumer did not stop within 30s")
	}
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("peer.py consumer: %v\n%s", err, c.stderr.String())
	}
}

// logBuffer is an slog destination shown when the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// testLogger returns a logger whose output the test prints if it fails.
func testLogger(t *testing.T) *slog.Logger {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			t.Logf("OMQS log:\n%s", b.b.String())
			b.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}
