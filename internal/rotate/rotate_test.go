package rotate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// monday is Monday 2 March 2026, 10:00 local time.
var monday = time.Date(2026, 3, 2, 10, 0, 0, 0, time.Local)

func at(d, h, m, s int) time.Time {
	return time.Date(2026, 3, d, h, m, s, 0, time.Local)
}

// dirContents returns the files of dir and their contents.
func dirContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = string(b)
	}
	return got
}

func sameFiles(t *testing.T, got, want map[string]string) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		g, gok := got[n]
		w, wok := want[n]
		switch {
		case !wok:
			t.Errorf("unexpected file %s (%q)", n, g)
		case !gok:
			t.Errorf("missing file %s, want %q", n, w)
		case g != w:
			t.Errorf("file %s = %q, want %q", n, g, w)
		}
	}
}

type write struct {
	at   time.Time
	text string
}

func TestRotationSchedules(t *testing.T) {
	tests := []struct {
		code   string
		writes []write
		want   map[string]string // file name -> contents
	}{
		{"1S", []write{
			{monday, "a"}, {monday.Add(999 * time.Millisecond), "b"}, {monday.Add(time.Second), "c"},
			{monday.Add(1500 * time.Millisecond), "d"}, {monday.Add(2 * time.Second), "e"},
		}, map[string]string{
			"x.log.2026-03-02_10-00-00": "ab", "x.log.2026-03-02_10-00-01": "cd", "x.log": "e",
		}},
		{"2M", []write{
			{monday, "a"}, {at(2, 10, 1, 59), "b"}, {at(2, 10, 2, 0), "c"},
		}, map[string]string{"x.log.2026-03-02_10-00": "ab", "x.log": "c"}},
		{"3h", []write{
			{monday, "a"}, {at(2, 12, 59, 59), "b"}, {at(2, 13, 0, 0), "c"},
		}, map[string]string{"x.log.2026-03-02_10": "ab", "x.log": "c"}},
		{"4D", []write{
			{monday, "a"}, {at(6, 9, 59, 59), "b"}, {at(6, 10, 0, 0), "c"},
		}, map[string]string{"x.log.2026-03-02": "ab", "x.log": "c"}},
		// A long pause: one rotation, named after the interval that was due;
		// the next interval starts from the time of that rotation.
		{"1H", []write{
			{monday, "a"}, {at(2, 15, 30, 0), "b"}, {at(2, 16, 29, 59), "c"}, {at(2, 16, 30, 0), "d"},
		}, map[string]string{"x.log.2026-03-02_10": "a", "x.log.2026-03-02_15": "bc", "x.log": "d"}},
		{"MD", []write{
			{monday, "a"}, {at(2, 23, 59, 59), "b"}, {at(3, 0, 0, 0), "c"}, {at(4, 0, 0, 1), "d"},
		}, map[string]string{"x.log.2026-03-02": "ab", "x.log.2026-03-03": "c", "x.log": "d"}},
		// W0 rotates when Monday ends, naming the file after the date a week
		// before, as Python does.
		{"W0", []write{
			{monday, "a"}, {at(2, 23, 59, 59), "b"}, {at(3, 0, 0, 0), "c"},
			{at(9, 23, 59, 59), "d"}, {at(10, 0, 0, 0), "e"},
		}, map[string]string{"x.log.2026-02-24": "ab", "x.log.2026-03-03": "cd", "x.log": "e"}},
		{"W3", []write{
			{monday, "a"}, {at(5, 23, 59, 59), "b"}, {at(6, 0, 0, 0), "c"},
		}, map[string]string{"x.log.2026-02-27": "ab", "x.log": "c"}},
		{"W6", []write{
			{monday, "a"}, {at(8, 23, 59, 59), "b"}, {at(9, 0, 0, 0), "c"},
		}, map[string]string{"x.log.2026-03-02": "ab", "x.log": "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			dir := t.TempDir()
			clock := &fakeClock{t: tt.writes[0].at}
			s, err := ParseSchedule(tt.code)
			if err != nil {
				t.Fatal(err)
			}
			w, err := Open(filepath.Join(dir, "x.log"), Options{Schedule: s, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			for _, wr := range tt.writes {
				clock.Set(wr.at)
				if _, err := w.Write([]byte(wr.text)); err != nil {
					t.Fatalf("Write at %v: %v", wr.at, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, dirContents(t, dir), tt.want)
		})
	}
}

func TestBackupCount(t *testing.T) {
	for _, keep := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			dir := t.TempDir()
			// Files that are not rotated files of x.log are never deleted.
			others := map[string]string{
				"x.log.notes":                "n",
				"x.log.2026-03-01":           "d", // a daily suffix, not a per-second one
				"x.log.2026-03-02_10-00-00x": "z",
				"y.log.2026-03-01_00-00-00":  "y",
			}
			for n, c := range others {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			clock := &fakeClock{t: monday}
			s, _ := ParseSchedule("1S")
			w, err := Open(filepath.Join(dir, "x.log"), Options{Schedule: s, BackupCount: keep, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 6; i++ {
				clock.Set(monday.Add(time.Duration(i) * time.Second))
				fmt.Fprint(w, i)
			}
			w.Close()
			want := map[string]string{"x.log": "5"}
			for n, c := range others {
				want[n] = c
			}
			first := 5 - keep
			if keep == 0 {
				first = 0
			}
			for i := first; i < 5; i++ {
				want[fmt.Sprintf("x.log.2026-03-02_10-00-0%d", i)] = fmt.Sprint(i)
			}
			sameFiles(t, dirContents(t, dir), want)
		})
	}
}

func TestIntervalStartsAtModificationTime(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "x.log")
	if err := os.WriteFile(name, []byte("old "), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := monday.Add(-30 * time.Minute)
	if err := os.Chtimes(name, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: monday}
	s, _ := ParseSchedule("1H")
	w, err := Open(name, Options{Schedule: s, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "a")
	clock.Set(monday.Add(30 * time.Minute))
	fmt.Fprint(w, "b")
	w.Close()
	sameFiles(t, dirContents(t, dir), map[string]string{"x.log.2026-03-02_09": "old a", "x.log": "b"})
}

func TestExistingRotatedFileIsKept(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.log.2026-03-02_10-00-00"), []byte("earlier "), 0o644); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: monday}
	s, _ := ParseSchedule("1S")
	w, err := Open(filepath.Join(dir, "x.log"), Options{Schedule: s, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "a")
	clock.Set(monday.Add(time.Second))
	fmt.Fprint(w, "b")
	w.Close()
	sameFiles(t, dirContents(t, dir), map[string]string{"x.log.2026-03-02_10-00-00": "earlier a", "x.log": "b"})
}

func TestCloseIsIdempotent(t *testing.T) {
	s, _ := ParseSchedule("MD")
	w, err := Open(filepath.Join(t.TempDir(), "x.log"), Options{Schedule: s})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
}

func TestDeviceIsNotRotated(t *testing.T) {
	if _, err := os.Stat(os.DevNull); err != nil || filepath.Separator != '/' {
		t.Skip("no /dev/null")
	}
	clock := &fakeClock{t: monday}
	s, _ := ParseSchedule("1S")
	w, err := Open(os.DevNull, Options{Schedule: s, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	clock.Set(monday.Add(time.Hour))
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(os.DevNull + ".2026-03-02_10-00-00"); err == nil {
		t.Fatal("/dev/null was rotated")
	}
}

func TestConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: monday}
	s, _ := ParseSchedule("1S")
	w, err := Open(filepath.Join(dir, "x.log"), Options{Schedule: s, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const writers, lines = 8, 200
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				if g == 0 && i%50 == 0 {
					clock.Set(clock.Now().Add(time.Second))
				}
				fmt.Fprintf(w, "goroutine %d line %d\n", g, i)
			}
		}()
	}
	wg.Wait()
	w.Close()
	files := dirContents(t, dir)
	if len(files) < 2 {
		t.Errorf("got %d files, want rotations", len(files))
	}
	seen := map[string]bool{}
	for _, c := range files {
		for _, l := range strings.Split(strings.TrimSuffix(c, "\n"), "\n") {
			if l == "" {
				continue
			}
			if seen[l] {
				t.Errorf("line %q twice", l)
			}
			seen[l] = true
		}
	}
	if len(seen) != writers*lines {
		t.Errorf("got %d distinct lines, want %d", len(seen), writers*lines)
	}
}

func TestParseSchedule(t *testing.T) {
	good := map[string]string{
		"1S": "1S", "30s": "30S", "2M": "2M", " 3h ": "3H", "4D": "4D",
		"W0": "W0", "w6": "W6", "MD": "MD", "md": "MD",
	}
	for in, want := range good {
		s, err := ParseSchedule(in)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", in, err)
			continue
		}
		if s.String() != want {
			t.Errorf("ParseSchedule(%q) = %s, want %s", in, s, want)
		}
	}
	bad := map[string]string{
		"":                      "empty",
		"s":                     "count is missing",
		"midnight":              "unknown unit",
		"0S":                    "at least 1",
		"-1S":                   "not a number",
		"+1S":                   "not a number",
		"1X":                    "unknown unit",
		"W7":                    "weekday must be 0 (Monday) to 6 (Sunday)",
		"W":                     "unknown unit",
		"xS":                    "not a number",
		"W01":                   "unknown unit",
		"99999999999999999999S": "not a number",
		"9999999D":              "too large",
	}
	for in, want := range bad {
		_, err := ParseSchedule(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseSchedule(%q) = %v, want an error naming the value and saying %q", in, err, want)
		}
	}
}

// The log file may quote messages: it is created readable by its owner
// only, stays so after rotation, and a symbolic link in its place is not
// followed.
func TestOpenCreatesPrivateAndRefusesLink(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: monday}
	s, _ := ParseSchedule("1S")
	name := filepath.Join(dir, "x.log")
	w, err := Open(name, Options{Schedule: s, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	clock.Set(monday.Add(time.Hour))
	if _, err := w.Write([]byte("x")); err != nil { // rotates, then creates the file again
		t.Fatal(err)
	}
	w.Close()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("%d files, want the log file and one rotated file", len(entries))
	}
	for _, e := range entries {
		if fi, err := e.Info(); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", e.Name(), fi.Mode().Perm(), err)
		}
	}

	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(victim, link); err != nil {
		t.Skip(err)
	}
	if w, err := Open(link, Options{Schedule: s, Now: clock.Now}); err == nil {
		w.Write([]byte("appended"))
		w.Close()
		t.Fatal("Open followed a symbolic link")
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("victim holds %q", b)
	}
}
