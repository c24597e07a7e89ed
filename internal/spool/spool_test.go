package spool

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/safefile"
)

func TestAppendTakeRead(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "sub", "backup.evt"))
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	recs := []Record{
		NewRecord("x", "k1", "id1", ts, []byte("hello\nworld"), nil),
		NewRecord("x", "k2", "id2", ts, []byte{0xff, 0x00, 0x01}, map[string]any{"h": "v"}),
	}
	if err := s.Append(recs...); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(NewRecord("x", "k3", "id3", ts, []byte("third"), nil)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Count(); err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; want 3", n, err)
	}
	files, err := s.Take()
	if err != nil || len(files) != 1 {
		t.Fatalf("Take = %v, %v", files, err)
	}
	// Appends after Take go to a new file.
	if err := s.Append(NewRecord("x", "k4", "id4", ts, []byte("fourth"), nil)); err != nil {
		t.Fatal(err)
	}
	var got []Record
	if _, err := Read(files[0], func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Key != "k1" || got[2].MessageID != "id3" || !got[0].Timestamp.Equal(ts) {
		t.Fatalf("read %+v", got)
	}
	if b, _ := got[0].Bytes(); string(b) != "hello\nworld" {
		t.Errorf("text body %q", b)
	}
	if b, _ := got[1].Bytes(); string(b) != "\xff\x00\x01" || got[1].Headers["h"] != "v" {
		t.Errorf("binary body %q headers %v", b, got[1].Headers)
	}
	files2, err := s.Take()
	if err != nil || len(files2) != 2 || files2[0] != files[0] {
		t.Fatalf("second Take = %v, %v; want the old replay file first", files2, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReadSkipsTornLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "backup.log")
	data := `{"exchange":"x","key":"a","ts":"2026-11-28T12:00:00Z","body":"one"}
not json
{"exchange":"x","key":"b","ts":"2026-11-28T12:00:00Z","body64":"!!!"}

{"exchange":"x","key":"c","ts":"2026-11-28T12:00:00Z","body":"three"}
{"exchange":"x","key":"d","ts":"2026-11-28T12:0`
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	var keys []string
	bad, err := Read(p, func(r Record) error { keys = append(keys, r.Key); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if bad != 3 || len(keys) != 2 || keys[0] != "a" || keys[1] != "c" {
		t.Fatalf("bad %d keys %v; want 3 bad lines and a, c", bad, keys)
	}
}

func TestAppendAfterFailedWriteStartsNewLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "backup.evt")
	s := New(p)
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := s.Append(NewRecord("x", "a", "id1", ts, []byte("one"), nil)); err != nil {
		t.Fatal(err)
	}
	// A write that fails part way (a full disk) leaves a partial line
	// behind; here the partial line is written by hand and the spool's
	// write fails because its file is swapped for a read-only one.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"exchange":"x","key":"b","ts":"2026-11-`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.mu.Lock()
	s.f.Close()
	if s.f, err = os.Open(p); err != nil {
		t.Fatal(err)
	}
	s.mu.Unlock()
	if err := s.Append(NewRecord("x", "b", "id2", ts, []byte("two"), nil)); err == nil {
		t.Fatal("Append to a read-only file succeeded")
	}
	s.mu.Lock()
	s.f.Close()
	s.f = nil // the next Append opens the file again
	s.mu.Unlock()
	if err := s.Append(NewRecord("x", "c", "id3", ts, []byte("three"), nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	bad, err := Read(p, func(r Record) error { keys = append(keys, r.Key); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 || len(keys) != 2 || keys[0] != "a" || keys[1] != "c" {
		t.Fatalf("bad %d keys %v; want the torn line bad and a, c read", bad, keys)
	}
}

func TestScanNumbersLinesAndKeepsRawBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "backup.evt")
	data := "{\"exchange\":\"x\",\"key\":\"a\",\"ts\":\"2026-11-28T12:00:00Z\",\"body\":\"one\"}\n" +
		"not json\n" +
		"\n" +
		"{\"exchange\":\"x\",\"key\":\"b\",\"ts\":\"2026-11-28T12:00:00Z\",\"body64\":\"!!!\"}\n" +
		"{\"exchange\":\"x\",\"key\":\"c\",\"ts\":\"2026-11-28T12:00:00Z\",\"body\":\"three\"}\n"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		n   int
		raw string
		key string
		ok  bool
	}
	var got []seen
	if err := Scan(p, func(l Line) error {
		got = append(got, seen{l.Number, string(l.Raw), l.Record.Key, l.OK})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []seen{
		{1, `{"exchange":"x","key":"a","ts":"2026-11-28T12:00:00Z","body":"one"}`, "a", true},
		{2, "not json", "", false},
		{4, `{"exchange":"x","key":"b","ts":"2026-11-28T12:00:00Z","body64":"!!!"}`, "", false},
		{5, `{"exchange":"x","key":"c","ts":"2026-11-28T12:00:00Z","body":"three"}`, "c", true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if err := Scan(filepath.Join(t.TempDir(), "missing"), func(Line) error { return nil }); !os.IsNotExist(err) {
		t.Errorf("missing file: %v, want a not-exist error", err)
	}
}

// A producer killed while writing leaves a last line without its newline.
// The next process's first record must not be glued to it: the torn part is
// unreadable, the new record reads back.
func TestAppendAfterTornLineFromEarlierProcess(t *testing.T) {
	p := filepath.Join(t.TempDir(), "backup.evt")
	torn := `{"exchange":"x","key":"a","ts":"2026-11-28T12:00:00Z","body":"one"}
{"exchange":"x","key":"b","ts":"2026-11-28T1`
	if err := os.WriteFile(p, []byte(torn), 0o600); err != nil {
		t.Fatal(err)
	}
	s := New(p) // a new process
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := s.Append(NewRecord("x", "c", "id3", ts, []byte("three"), nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	bad, err := Read(p, func(r Record) error { keys = append(keys, r.Key); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 || strings.Join(keys, ",") != "a,c" {
		t.Fatalf("bad %d keys %v; want the torn line bad and a, c read", bad, keys)
	}
}

// replayAll replays the file at path with opts and returns the records.
func replayAll(t *testing.T, path string, opts ReplayOptions) ([]Record, Result) {
	t.Helper()
	var recs []Record
	res, err := Replay(path, opts, func(r Record) error { recs = append(recs, r); return nil })
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return recs, res
}

// readFile returns the content of path, or "" when it does not exist.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// The original Python library spooled "key:body" lines; an event with an
// empty key has an empty key there. They replay to the lane's exchange, and
// what is not a record goes aside, as it was.
func TestReplayReadsOriginalLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "backup.evt.replay.1")
	data := ":an event: with colons\n" +
		"user.created:{\"id\": 42}\n" +
		`{"exchange":"omqs.exchange.event","key":"ours","id":"id1","ts":"2026-11-28T12:00:00Z","body":"json"}` + "\n" +
		"a line without a separator\n" +
		"  \"continued\": 1\n" + // the second line of a body that held a newline
		"{\"exchange\":\"omqs.exc\n" + // a torn record of ours
		"k:\xff\xfe\n" +
		"last:no newline"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(dir, "backup.evt.unreadable")
	recs, res := replayAll(t, p, ReplayOptions{Exchange: "omqs.exchange.event", DefaultKey: "omqs.key.event", Aside: aside})
	type got struct{ ex, key, body, id string }
	want := []got{
		{"omqs.exchange.event", "omqs.key.event", "an event: with colons", ""},
		{"omqs.exchange.event", "user.created", `{"id": 42}`, ""},
		{"omqs.exchange.event", "ours", "json", "id1"},
		{"omqs.exchange.event", "k", "\xff\xfe", ""},
		{"omqs.exchange.event", "last", "no newline", ""},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records %+v, want %d", len(recs), recs, len(want))
	}
	for i, r := range recs {
		b, err := r.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if g := (got{r.Exchange, r.Key, string(b), r.MessageID}); g != want[i] {
			t.Errorf("record %d = %+v, want %+v", i, g, want[i])
		}
		if r.Legacy() != (r.MessageID == "") {
			t.Errorf("record %d: Legacy() = %v", i, r.Legacy())
		}
	}
	if res.Records != 5 || res.Legacy != 4 || res.Unreadable != 3 || res.SetAside() != 3 {
		t.Errorf("result %+v", res)
	}
	wantAside := "a line without a separator\n  \"continued\": 1\n{\"exchange\":\"omqs.exc\n"
	if got := readFile(t, aside); got != wantAside {
		t.Errorf("set aside %q, want %q", got, wantAside)
	}
}

// JSON escapes a control byte into six: such bodies are written as base64,
// so that no body makes a line longer than LineLimit allows for it.
func TestAppendBoundsLineLength(t *testing.T) {
	p := filepath.Join(t.TempDir(), "backup.evt")
	s := New(p)
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	bodies := [][]byte{
		bytes.Repeat([]byte{0}, 64<<10),
		bytes.Repeat([]byte(`"\`), 32<<10),
		bytes.Repeat([]byte("\u2028"), 20<<10),
		bytes.Repeat([]byte("plain text "), 6<<10),
	}
	for _, b := range bodies {
		if err := s.Append(NewRecord("x", "k", "id", ts, b, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(readFile(t, p), "\n")
	for i, b := range bodies {
		if max := base64.StdEncoding.EncodedLen(len(b)) + 200; len(lines[i]) > max {
			t.Errorf("body %d (%d bytes) makes a line of %d bytes, more than %d", i, len(b), len(lines[i]), max)
		}
	}
	i := 0
	if _, err := Read(p, func(r Record) error {
		if b, _ := r.Bytes(); !bytes.Equal(b, bodies[i]) {
			t.Errorf("body %d does not read back", i)
		}
		i++
		return nil
	}); err != nil || i != len(bodies) {
		t.Fatalf("read %d records, %v", i, err)
	}
}

// A line too long to be a record is set aside whole (it streams to the
// aside file) and counted; the lines after it still replay. A record with a
// body above MaxBody is set aside too.
func TestReplaySkipsOverlongLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "backup.evt.replay.1")
	long := strings.Repeat("y", 200<<10) // longer than the reader's buffer too
	big := `{"exchange":"x","key":"big","ts":"2026-11-28T12:00:00Z","body":"` + strings.Repeat("z", 2000) + `"}` + "\n"
	data := `{"exchange":"x","key":"a","ts":"2026-11-28T12:00:00Z","body":"one"}` + "\n" +
		`{"exchange":"x","key":"long","ts":"2026-11-28T12:00:00Z","body":"` + long + `"}` + "\n" +
		big +
		`{"exchange":"x","key":"c","ts":"2026-11-28T12:00:00Z","body":"three"}` + "\n" +
		long // a last line, too long and without a newline
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(dir, "backup.evt.unreadable")
	recs, res := replayAll(t, p, ReplayOptions{Exchange: "x", MaxBody: 1000, Aside: aside, lineLimit: 100 << 10})
	if len(recs) != 2 || recs[0].Key != "a" || recs[1].Key != "c" {
		t.Fatalf("records %v, want a and c", recs)
	}
	if res.Unreadable != 2 || res.TooLarge != 1 {
		t.Fatalf("result %+v, want 2 unreadable, 1 too large", res)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(readFile(t, aside), "\n"), "\n")
	if len(lines) != 3 || len(lines[0]) != len(long)+len(big)-2000+1 || lines[1] != big || lines[2] != long {
		t.Fatalf("set aside %d lines of %d bytes", len(lines), len(readFile(t, aside)))
	}
}

// A record naming another exchange than the lane's is set aside, never
// handed back to be published there.
func TestReplaySetsAsideOtherExchanges(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "backup.evt.replay.1")
	s := New(filepath.Join(dir, "w"))
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := s.Append(NewRecord("mine", "a", "1", ts, []byte("1"), nil), NewRecord("victim", "b", "2", ts, []byte("2"), nil)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Rename(s.Path(), p); err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(dir, "aside")
	recs, res := replayAll(t, p, ReplayOptions{Exchange: "mine", Aside: aside})
	if len(recs) != 1 || recs[0].Exchange != "mine" || res.Foreign != 1 {
		t.Fatalf("records %v, result %+v", recs, res)
	}
	if !strings.Contains(readFile(t, aside), `"victim"`) {
		t.Fatal("the record for another exchange was not set aside")
	}
}

// The folder is ours alone: created private, files created private, no
// symbolic link followed when appending.
func TestAppendCreatesPrivateAndFollowsNoLink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "folder")
	s := New(filepath.Join(dir, "backup.evt"))
	if err := s.Append(NewRecord("x", "a", "1", time.Now(), []byte("1"), nil)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, p := range []string{dir, filepath.Dir(dir), s.Path()} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", p, fi.Mode().Perm())
		}
	}

	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "backup.log")
	if err := os.Symlink(victim, link); err != nil {
		t.Skip(err)
	}
	s = New(link)
	err := s.Append(NewRecord("x", "a", "1", time.Now(), []byte("1"), nil))
	if !errors.Is(err, safefile.ErrSymlink) {
		t.Errorf("Append through a link: %v, want ErrSymlink", err)
	}
	if files, err := s.Take(); err != nil || len(files) != 0 {
		t.Errorf("Take = %v, %v; want the link left alone", files, err)
	}
	s.Close()
	if got := readFile(t, victim); got != "precious\n" {
		t.Errorf("victim holds %q", got)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was moved: %v", err)
	}
}

// A forged replay file (a link, or a file another user wrote) is refused,
// moved out of the way and not read again.
func TestReplayRefusesForgedFiles(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "backup.evt"))
	victim := filepath.Join(t.TempDir(), "victim")
	rec := `{"exchange":"x","key":"a","ts":"2026-11-28T12:00:00Z","body":"forged"}` + "\n"
	if err := os.WriteFile(victim, []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	forged := []string{s.Path() + ".replay.1"}
	if err := os.Symlink(victim, forged[0]); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() == 0 {
		other := s.Path() + ".replay.2"
		if err := os.WriteFile(other, []byte(rec), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		forged = append(forged, other)
	}
	files, err := s.Take()
	if err != nil || strings.Join(files, ",") != strings.Join(forged, ",") {
		t.Fatalf("Take = %v, %v; want %v", files, err, forged)
	}
	for _, p := range files {
		res, err := Replay(p, ReplayOptions{Exchange: "x"}, func(r Record) error {
			t.Errorf("%s: replayed %+v", p, r)
			return nil
		})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), p+".refused") || res.Records != 0 {
			t.Errorf("Replay %s: %v, %+v; want ErrRefused naming %s.refused", p, err, res, p)
		}
		if _, err := os.Lstat(p + ".refused"); err != nil {
			t.Errorf("%s was not moved aside: %v", p, err)
		}
	}
	if files, err := s.Pending(); err != nil || len(files) != 0 {
		t.Errorf("Pending = %v, %v; want the refused files no longer pending", files, err)
	}
	if got := readFile(t, victim); got != rec {
		t.Errorf("victim holds %q", got)
	}
}

// Every line of a spool file is either replayed or set aside as it was, and
// every body written reads back.
func FuzzReplay(f *testing.F) {
	f.Add([]byte("info:hello\n:x\n{\"exchange\":\"x\",\"key\":\"k\",\"ts\":\"2026-11-28T12:00:00Z\"}\nbad"), []byte("body\x00"))
	f.Add([]byte("{\"exchange\":\"x\"\n\n \n{}"), []byte("\xff"))
	f.Fuzz(func(t *testing.T, data, body []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "backup.evt.replay.1")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		aside := filepath.Join(dir, "aside")
		res, err := Replay(p, ReplayOptions{Exchange: "x", Aside: aside, MaxBody: 64, lineLimit: 256}, func(r Record) error {
			if b, err := r.Bytes(); err != nil || len(b) > 64 {
				t.Errorf("record %+v: body %d bytes, %v", r, len(b), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		lines := 0
		for _, l := range bytes.SplitAfter(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			} else if len(l) > 256 {
				lines++ // too long to look at: set aside, blank or not
			}
		}
		if res.Records+res.SetAside() != lines {
			t.Fatalf("%d lines: %+v", lines, res)
		}
		kept, _ := os.ReadFile(aside)
		if n := bytes.Count(kept, []byte{'\n'}); n != res.SetAside() {
			t.Fatalf("%d lines set aside, %d in the file", res.SetAside(), n)
		}

		s := New(filepath.Join(dir, "backup.log"))
		if err := s.Append(NewRecord("x", "k", "id", time.Unix(0, 0), body, nil)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		n := 0
		if _, err := Read(s.Path(), func(r Record) error {
			if b, _ := r.Bytes(); !bytes.Equal(b, body) {
				t.Errorf("body %q read back as %q", body, b)
			}
			n++
			return nil
		}); err != nil || n != 1 {
			t.Fatalf("read %d records: %v", n, err)
		}
	})
}

// A record keeps its content type; a line written before records had one
// reads with none, and one with a content type reads in a version that
// does not know it (unknown fields are ignored).
func TestContentType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backup.evt")
	s := New(path)
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	r := NewRecord("x", "k", "id1", ts, []byte(`{"a":1}`), nil)
	r.ContentType = "application/json"
	if err := s.Append(r, NewRecord("x", "k", "id2", ts, []byte("plain"), nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"content_type":"application/json"`) || strings.Contains(lines[1], "content_type") {
		t.Fatalf("lines %q: want a content_type on the first only", lines)
	}
	old := `{"exchange":"x","key":"k","id":"id3","ts":"2024-05-01T10:00:00Z","body":"old"}`
	if err := os.WriteFile(path, []byte(string(b)+old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []Record
	if _, err := Read(path, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ContentType != "application/json" || got[1].ContentType != "" || got[2].ContentType != "" || got[2].MessageID != "id3" {
		t.Fatalf("read %+v", got)
	}
	// What an older reader decodes, without the field.
	var before struct {
		Exchange *string `json:"exchange"`
		Key      *string `json:"key"`
		Body     string  `json:"body"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &before); err != nil || before.Exchange == nil || before.Body != `{"a":1}` {
		t.Fatalf("a reader without content types: %+v, %v", before, err)
	}
}
