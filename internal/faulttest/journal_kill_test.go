package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faulttest"
)

// killChildEnv, set in a re-executed test binary's environment, makes
// TestMain run journalKillChild instead of the tests. Its value is
// "dir|url|exchange|queue|key|first|accepted-file".
const killChildEnv = "OMQS_JOURNAL_KILL_CHILD"

// killConfig is the configuration every process of the kill test uses.
func killConfig(url, exchange, queue, key, dir string) *omqs.Config {
	cfg := omqs.DefaultConfig()
	cfg.Global.MQURL = url
	cfg.Global.ReconnectInterval = 100 * time.Millisecond
	cfg.Global.ReconnectTimes = 5
	cfg.Global.Journal = filepath.Join(dir, "journal")
	cfg.Global.JournalMaxBytes = 4 << 20
	cfg.Log.Folder = filepath.Join(dir, "spool")
	cfg.LogWorker.Exchange = exchange + ".log"
	cfg.EventWorker.Exchange = exchange
	cfg.EventWorker.Queue = queue
	cfg.EventWorker.Keys = []string{key}
	return cfg
}

// journalKillChild sends a numbered stream of events (from first on), in
// bursts, through a Manager with the journal on, and appends each number
// Send accepted to the accepted file (one write per number), until it is
// killed.
func journalKillChild(arg string) int {
	f := strings.Split(arg, "|")
	if len(f) != 7 {
		fmt.Fprintln(os.Stderr, "bad", killChildEnv, arg)
		return 2
	}
	first, _ := strconv.Atoi(f[5])
	acc, err := os.OpenFile(f[6], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := killConfig(f[1], f[2], f[3], f[4], f[0])
	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithName(namePrefix+"-journal-kill"), omqs.WithRetryOnFailedConnect(true))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := m.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var line []byte
	for n := first; ; {
		burst := 1 + rand.IntN(3000)
		for range burst {
			s := strconv.Itoa(n)
			for {
				err := m.SendEvent(s, "")
				if err == nil {
					break
				}
				if !errors.Is(err, omqs.ErrBufferFull) {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				runtime.Gosched()
			}
			line = append(strconv.AppendInt(line[:0], int64(n), 10), '\n')
			if _, err := acc.Write(line); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			n++
		}
		// A pause between bursts: kills land before, in and after them.
		<-time.After(time.Duration(rand.IntN(30)) * time.Millisecond)
	}
}

// killReceiver consumes the queue (auto-ack) and counts each body, and
// reconnects while the broker is stopped.
type killReceiver struct {
	mu   sync.Mutex
	seen map[int]int
	done chan struct{}
	wg   sync.WaitGroup
}

func receiveAll(t *testing.T, url, queue string) *killReceiver {
	r := &killReceiver{seen: map[int]int{}, done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			r.consume(url, queue)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			go func() {
				select {
				case <-r.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			faulttest.WaitReady(ctx, url)
			cancel()
			select {
			case <-r.done:
				return
			default:
			}
		}
	}()
	t.Cleanup(func() { close(r.done); r.wg.Wait() })
	return r
}

// consume receives until the connection goes or the test ends.
func (r *killReceiver) consume(url, queue string) {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second), Properties: amqp.Table{"connection_name": namePrefix + "-journal-kill-receiver"}})
	if err != nil {
		return
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return
	}
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case d, ok := <-ds:
			if !ok {
				return
			}
			n, err := strconv.Atoi(string(d.Body))
			if err != nil {
				continue
			}
			r.mu.Lock()
			r.seen[n]++
			r.mu.Unlock()
		case <-r.done:
			return
		}
	}
}

// missing returns how many of want were not received.
func (r *killReceiver) missing(want []int) (missing int, firstMissing int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	firstMissing = -1
	for _, n := range want {
		if r.seen[n] == 0 {
			if missing == 0 {
				firstMissing = n
			}
			missing++
		}
	}
	return missing, firstMissing
}

func (r *killReceiver) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *killReceiver) duplicates() (dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.seen {
		dups += c - 1
	}
	return dups
}

// TestJournalSurvivesKill is issue 14's kill test: a child process sends a
// numbered stream through a Manager with the journal on and records each
// number Send accepted; it is killed with SIGKILL at a random moment (before,
// during or after a burst; every tenth run while the broker is stopped), and
// the next child runs on the same folder. At the end a Manager in this
// process drains the folder, and every accepted number must have reached the
// queue. OMQS_JOURNAL_KILL_RUNS sets the number of kills (default 50);
// OMQS_JOURNAL_KILL_BROKER_DOWN=0 leaves the broker up in every run (for a
// broker other tests share).
func TestJournalSurvivesKill(t *testing.T) {
	faulttest.Require(t)
	faulttest.Restore(t)
	url := brokertest.URL(t)
	runs := 50
	if v, err := strconv.Atoi(os.Getenv("OMQS_JOURNAL_KILL_RUNS")); err == nil && v > 0 {
		runs = v
	}
	n := brokertest.NewNames(t)
	brokertest.Cleanup(t, []string{n.Exchange, n.Exchange + ".log"}, []string{n.Queue})
	dir := t.TempDir()
	accepted := filepath.Join(dir, "accepted")
	recv := receiveAll(t, url, n.Queue)

	start := time.Now()
	for run := range runs {
		down := run%10 == 5 && os.Getenv("OMQS_JOURNAL_KILL_BROKER_DOWN") != "0"
		var startApp func()
		if down {
			startApp = faulttest.StopApp(t)
		}
		arg := strings.Join([]string{dir, url, n.Exchange, n.Queue, n.Key, strconv.Itoa(run * 10_000_000), accepted}, "|")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+arg)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment from the exec on: sometimes before the
		// Manager started, mostly while it sends.
		kill := time.NewTimer(time.Duration(rand.IntN(1500)) * time.Millisecond)
		<-kill.C
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: the child ended on its own (%v): %s", run, err, stderr.String())
		}
		if down {
			startApp()
		}
	}
	want := readAccepted(t, accepted)
	t.Logf("%d kills in %v; %d numbers accepted", runs, time.Since(start).Round(time.Millisecond), len(want))

	// A last Manager on the folder publishes what the journal and the spool
	// still hold.
	cfg := killConfig(url, n.Exchange, n.Queue, n.Key, dir)
	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithName(namePrefix+"-journal-drain"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	drain := time.Now()
	perr := faulttest.Poll(2*time.Minute, func() bool {
		if recv.distinct() < len(want) {
			return false // cheap: the full check holds the receiver's lock longer
		}
		miss, _ := recv.missing(want)
		return miss == 0
	})
	st := m.Stats()
	if err := m.Stop(context.Background()); err != nil {
		t.Errorf("Stop: %v", err)
	}
	miss, first := recv.missing(want)
	t.Logf("lost %d of %d accepted; duplicates %d; the last Manager recovered %d from the journal and replayed %d from the spool in %v",
		miss, len(want), recv.duplicates(), st.Recovered, st.Replayed, time.Since(drain).Round(time.Millisecond))
	if perr != nil || miss != 0 {
		t.Errorf("%d accepted numbers never arrived (the first: %d)", miss, first)
	}
}

// readAccepted reads the numbers the children recorded (a line cut by the
// kill is left out).
func readAccepted(t *testing.T, path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasSuffix(l, "\n") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(l, "\n"))
		if err != nil {
			t.Fatalf("accepted file: %q", l)
		}
		nums = append(nums, n)
	}
	return nums
}
