package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// omqsBin is the omqs binary the tests run, built once by TestMain.
var omqsBin string

// TestMain builds the command into a temporary folder, runs the tests, and
// fails them if a goroutine is still running after them.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "omqs-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	omqsBin = filepath.Join(dir, "omqs")
	if out, err := exec.Command("go", "build", "-o", omqsBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// result is what a run of omqs gave.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runOpts are how a test runs omqs: its folder, environment and input.
type runOpts struct {
	dir   string   // working folder; "" is a new empty one
	env   []string // NAME=VALUE added to an environment without OMQS_*
	stdin string
}

// newCmd returns the omqs command with args, in a clean environment:
// no OMQS_MQURL, no OMQS_CONFIG, and a working folder without OMQS.cfg.
func newCmd(t *testing.T, ctx context.Context, o runOpts, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, omqsBin, args...)
	cmd.Dir = o.dir
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OMQS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, o.env...)
	cmd.Stdin = strings.NewReader(o.stdin)
	return cmd
}

// runOmqs runs the binary with args and returns what it printed and its exit
// status. A run longer than a minute fails the test.
func runOmqs(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := newCmd(t, ctx, o, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("omqs %s: %v (%v)\n%s", strings.Join(args, " "), err, ctx.Err(), r)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// wantCode fails the test unless r exited with code; a failure (code != 0)
// must be explained by exactly one line on standard error.
func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit status %d, got\n%s", code, r)
	}
	if code != 0 {
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "omqs") {
			t.Errorf("the last line of standard error is not an omqs error:\n%s", r)
		}
	}
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func wantNotContains(t *testing.T, what, got string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(got, w) {
			t.Errorf("%s contains %q:\n%s", what, w, got)
		}
	}
}

// writeFile writes data to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// setup is a configuration file naming exchanges and a queue of the test's
// own on RabbitMQ, deleted when the test ends.
type setup struct {
	dir      string // the test's folder, holding the file
	cfg      string // path of the configuration file
	url      string
	logX     string // [LogWorker] EXCHANGE
	eventX   string // [EventWorker] EXCHANGE
	eventQ   string // [EventWorker] QUEUE
	eventKey string // [EventWorker] KEYS
}

// brokerSetup skips the test without RabbitMQ (fails it with
// OMQS_REQUIRE_BROKER=1) and writes the test's configuration file.
func brokerSetup(t *testing.T) setup {
	t.Helper()
	url := brokertest.URL(t)
	n := brokertest.NewNames(t)
	s := setup{dir: t.TempDir(), url: url, logX: brokertest.Unique("omqs.test.x"), eventX: n.Exchange, eventQ: n.Queue, eventKey: n.Key}
	brokertest.Cleanup(t, []string{s.logX}, nil)
	s.cfg = writeFile(t, s.dir, "OMQS.cfg", fmt.Sprintf(`[Global]
MQURL = %s
RECONNECT_INTERVAL = 0.2
RECONNECT_TIMES = 3

[Log]
FOLDER = %s

[LogWorker]
EXCHANGE = %s

[EventWorker]
EXCHANGE = %s
QUEUE = %s
KEYS = %s
`, strings.ReplaceAll(url, "%", "%%"), filepath.Join(s.dir, "log"), s.logX, s.eventX, s.eventQ, s.eventKey))
	return s
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// depth waits until queue holds want ready messages, failing the test after
// 10s.
func depth(t *testing.T, ch *amqp.Channel, queue string, want int) {
	t.Helper()
	got := -1
	waitUntil(t, 10*time.Second, fmt.Sprintf("%d messages in %s (last count %d)", want, queue, got), func() bool {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("queue %s: %v", queue, err)
		}
		got = q.Messages
		return got == want
	})
}

// get takes the next message of queue, failing the test if there is none.
func get(t *testing.T, ch *amqp.Channel, queue string) amqp.Delivery {
	t.Helper()
	d, ok, err := ch.Get(queue, true)
	if err != nil || !ok {
		t.Fatalf("get from %s: ok=%v %v", queue, ok, err)
	}
	return d
}

// lineReader collects the lines of a pipe on a goroutine so that a test can
// wait for one with a deadline.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled on each line and at the end
	done  chan struct{}
}

func readLines(r io.Reader) *lineReader {
	lr := &lineReader{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
			select {
			case lr.more <- struct{}{}:
			default:
			}
		}
	}()
	return lr
}

func (lr *lineReader) all() []string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]string(nil), lr.lines...)
}

// waitFor waits until ok holds for the lines read so far, or fails the test
// after the deadline.
func (lr *lineReader) waitFor(t *testing.T, what string, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		if lines := lr.all(); ok(lines) {
			return lines
		}
		select {
		case <-lr.more:
		case <-lr.done:
			if lines := lr.all(); ok(lines) {
				return lines
			}
			t.Fatalf("the output ended before %s:\n%s", what, strings.Join(lr.all(), "\n"))
		case <-deadline.C:
			t.Fatalf("no %s within 20s:\n%s", what, strings.Join(lr.all(), "\n"))
		}
	}
}
