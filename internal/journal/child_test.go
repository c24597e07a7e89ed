//go:build linux

package journal

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// childEnv, set in a re-executed test binary's environment, makes TestMain
// run runChild instead of the tests: "lock <dir>" or "kill <dir> <first seq>".
const childEnv = "JOURNAL_TEST_CHILD"

var killOpts = Options{SegmentSize: 64 << 10, MaxBytes: 1 << 20}

func runChild(mode string) int {
	f := strings.Fields(mode)
	switch f[0] {
	case "lock":
		_, err := Open(f[1], Options{SegmentSize: testSeg})
		fmt.Println(err)
		if errors.Is(err, ErrLocked) {
			return 3
		}
		return 1
	case "kill":
		first, _ := strconv.Atoi(f[2])
		return killChild(f[1], first)
	}
	return 2
}

// killChild appends a numbered stream from two goroutines, and confirms what
// a reader reads, until it is killed. It prints "A n" once Append(n)
// returned and "C n" before it confirms n, each line with one write.
func killChild(dir string, first int) int {
	j, err := Open(dir, killOpts)
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	out := func(s string) { os.Stdout.WriteString(s) }
	var n atomic.Int64
	n.Store(int64(first))
	for range 2 {
		go func() {
			for {
				i := n.Add(1) - 1
				s := strconv.FormatInt(i, 10)
				for {
					_, err := j.Append("k", s, "", 0, 0)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrFull) {
						out("E " + err.Error() + "\n")
						os.Exit(1)
					}
					runtime.Gosched()
				}
				out("A " + s + "\n")
			}
		}()
	}
	r := j.Reader()
	for {
		e, ok := r.Next()
		if !ok {
			return 0
		}
		out("C " + string(e.Body) + "\n")
		j.Confirm(e.Next)
	}
}

func TestSecondProcessGetsLockError(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{SegmentSize: testSeg})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=lock "+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: %v, output %q; want exit code 3 (ErrLocked)", err, out)
	}
	msg := string(out)
	if !strings.Contains(msg, dir) || !strings.Contains(msg, "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("child's error %q names neither %s nor process %d", msg, dir, os.Getpid())
	}
}

// TestKill9LosesNothing kills a child appending a numbered stream at random
// moments, and checks after each kill that the journal holds every number
// the child had accepted and not confirmed. The same directory serves every
// round, so each child starts with what the previous one left.
func TestKill9LosesNothing(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	dir := t.TempDir()
	// A number's "C" line may come before its "A" line: keep both sets.
	accepted, confirmed := map[int]bool{}, map[int]bool{}
	next, dups := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for round := range rounds {
		if time.Now().After(deadline) {
			t.Logf("stopped after %d rounds: time is up", round)
			break
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=kill "+dir+" "+strconv.Itoa(next))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var (
			mu        sync.Mutex
			lines     []string
			nAccepted int
			readerEnd = make(chan struct{})
		)
		go func() {
			defer close(readerEnd)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				mu.Lock()
				lines = append(lines, sc.Text())
				if strings.HasPrefix(sc.Text(), "A ") {
					nAccepted++
				}
				mu.Unlock()
			}
		}()
		// Kill before, during or well into the stream.
		target := []int{0, 1, 100, 3000, 20000}[rand.IntN(5)]
		until := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			a := nAccepted
			mu.Unlock()
			if a >= target || time.Now().After(until) {
				break
			}
			runtime.Gosched()
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-readerEnd
		cmd.Wait()

		accepts, confirms := 0, 0
		for _, l := range lines {
			kind, num, _ := strings.Cut(l, " ")
			i, err := strconv.Atoi(num)
			if err != nil {
				t.Fatalf("round %d: child said %q", round, l)
			}
			switch kind {
			case "A":
				accepted[i] = true
				accepts++
				next = max(next, i+1)
			case "C":
				confirmed[i] = true
				confirms++
			}
		}
		pending := 0
		// The children take numbers from a counter: skip past any that
		// was taken but not printed.
		next += 2

		j, err := Open(dir, killOpts)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		found := map[int]bool{}
		for _, e := range readAll(j) {
			i, err := strconv.Atoi(string(e.Body))
			if err != nil {
				t.Fatalf("round %d: recovered body %q", round, e.Body)
			}
			found[i] = true
		}
		rec := j.Recovery()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		lost := 0
		for i := range accepted {
			if !confirmed[i] {
				pending++
				if !found[i] {
					lost++
				}
			}
		}
		for i := range found {
			if confirmed[i] {
				dups++
			}
		}
		t.Logf("round %d: killed after %d accepted, %d confirmed; %d pending, recovered %d (%d corrupt, %d torn); lost %d",
			round, accepts, confirms, pending, rec.Entries, rec.Corrupt, rec.Torn, lost)
		if lost > 0 {
			t.Fatalf("round %d: %d accepted, unconfirmed numbers are not in the journal", round, lost)
		}
		if rec.Corrupt > 0 {
			t.Errorf("round %d: %d corrupt entries after a kill", round, rec.Corrupt)
		}
	}
	t.Logf("duplicates (recovered although the child had confirmed them): %d", dups)
}
