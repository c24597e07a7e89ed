package spool

import (
	"os"
	"path/filepath"
	"testing"
	"time"
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
