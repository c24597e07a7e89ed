package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/spool"
)

// spoolLine is one record line as the library's spool writes it.
func spoolLine(t *testing.T, exchange, key, id string, ts time.Time, body []byte, headers map[string]any) string {
	t.Helper()
	b, err := json.Marshal(spool.NewRecord(exchange, key, id, ts, body, headers))
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func TestSpoolLsShow(t *testing.T) {
	dir := t.TempDir()
	t1 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	evt := spoolLine(t, "omqs.exchange.event", "email", "id-1", t2, []byte(`{"to":"a@example.com"}`), map[string]any{"tenant": "acme"}) +
		"{torn\n" +
		spoolLine(t, "omqs.exchange.event", "email", "id-2", t1, []byte{0xff, 0x00}, nil)
	writeFile(t, dir, "backup.evt", evt)
	writeFile(t, dir, "backup.log.replay.17", spoolLine(t, "omqs.exchange.log", "error", "id-3", t1, []byte("disk\nfull"), nil))
	writeFile(t, dir, "unrelated.txt", "not a spool file\n")

	// memory:// is as good as any broker: ls and show do not connect.
	r := runOmqs(t, runOpts{}, "--url", "memory://", "spool", "ls", "--dir", dir)
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header, two files and a total:\n%s", r.stdout)
	}
	wantFields := func(line string, want ...string) {
		t.Helper()
		f := strings.Fields(line)
		if len(f) < len(want) {
			t.Errorf("line %q, want %q", line, want)
			return
		}
		for i, w := range want {
			if w != "" && f[i] != w {
				t.Errorf("field %d of %q is %q, want %q", i, line, f[i], w)
			}
		}
	}
	wantFields(lines[0], "FILE", "RECORDS", "SIZE", "OLDEST", "NEWEST", "UNREADABLE")
	wantFields(lines[1], filepath.Join(dir, "backup.log.replay.17"), "1")
	wantFields(lines[2], filepath.Join(dir, "backup.evt"))
	if f := strings.Fields(lines[2]); f[1] != "2" || f[len(f)-1] != "1" || f[4] != stamp(t1) || f[5] != stamp(t2) {
		t.Errorf("backup.evt: %q; want 2 records, oldest %s, newest %s, 1 unreadable", f, stamp(t1), stamp(t2))
	}
	wantFields(lines[3], "total", "3")

	r = runOmqs(t, runOpts{}, "--url", "memory://", "spool", "show", "--dir", dir)
	wantCode(t, r, 0)
	want := []string{
		filepath.Join(dir, "backup.log.replay.17") + `:1 ` + stamp(t1) + ` omqs.exchange.log error id-3 "disk\nfull"`,
		filepath.Join(dir, "backup.evt") + `:1 ` + stamp(t2) + ` omqs.exchange.event email id-1 {"to":"a@example.com"}`,
		filepath.Join(dir, "backup.evt") + `:2 unreadable: {torn`,
		filepath.Join(dir, "backup.evt") + `:3 ` + stamp(t1) + ` omqs.exchange.event email id-2 "\xff\x00"`,
	}
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("show:\n%s\nwant\n%s", r.stdout, strings.Join(want, "\n"))
	}
	wantContains(t, "standard error", r.stderr, "1 unreadable line")

	// One file, as JSON.
	r = runOmqs(t, runOpts{}, "spool", "show", "--json", filepath.Join(dir, "backup.evt"))
	wantCode(t, r, 0)
	var got []jsonMessage
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m jsonMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != 3 || got[0].ID != "id-1" || got[0].Body == nil || *got[0].Body != `{"to":"a@example.com"}` ||
		got[0].Headers["tenant"] != "acme" || !got[0].Time.Equal(t2) || !got[1].Unreadable || got[1].Line != 2 ||
		got[2].Body64 != "/wA=" || got[2].Key != "email" {
		t.Errorf("show --json:\n%s", r.stdout)
	}

	// FOLDER of [Log] is the default folder.
	cfg := writeFile(t, t.TempDir(), "OMQS.cfg", "[Global]\nMQURL = memory://\n[Log]\nFOLDER = "+dir+"\n")
	r = runOmqs(t, runOpts{}, "--config", cfg, "spool", "ls")
	wantCode(t, r, 0)
	wantContains(t, "ls", r.stdout, filepath.Join(dir, "backup.evt"))
}

func TestSpoolLsShowErrors(t *testing.T) {
	empty := t.TempDir()
	r := runOmqs(t, runOpts{}, "--url", "memory://", "spool", "ls", "--dir", empty)
	wantCode(t, r, 0)
	wantContains(t, "ls", r.stdout, "no spool files in "+empty)

	missing := filepath.Join(empty, "nope")
	r = runOmqs(t, runOpts{}, "--url", "memory://", "spool", "ls", "--dir", missing)
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "omqs spool ls: spool folder "+missing+" does not exist")

	r = runOmqs(t, runOpts{}, "spool", "show", filepath.Join(empty, "backup.evt"))
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "backup.evt does not exist")

	// Without --dir the configuration must load.
	r = runOmqs(t, runOpts{}, "--config", filepath.Join(empty, "nope.cfg"), "spool", "ls")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "nope.cfg (named by --config) does not exist")

	// Replaying to the in-process broker would lose the spool.
	writeFile(t, empty, "backup.evt", spoolLine(t, "x", "k", "id", time.Now(), []byte("b"), nil))
	r = runOmqs(t, runOpts{}, "--url", "memory://", "spool", "replay", "--dir", empty)
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "would lose the spool")
	if _, err := os.Stat(filepath.Join(empty, "backup.evt")); err != nil {
		t.Errorf("the spool file was touched: %v", err)
	}
}

func TestSpoolReplay(t *testing.T) {
	s := brokerSetup(t)
	ch := brokertest.Channel(t)
	// A queue bound to the log exchange, to see the logs arrive.
	logQ := brokertest.Unique("omqs.test.q")
	brokertest.Cleanup(t, nil, []string{logQ})
	declareBound(t, ch, logQ, s.logX, "#")

	dir := filepath.Join(s.dir, "log")
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var evt strings.Builder
	for i := range 5 {
		evt.WriteString(spoolLine(t, s.eventX, s.eventKey, fmt.Sprintf("ev-%d", i), ts.Add(time.Duration(i)*time.Second), []byte(fmt.Sprintf("event %d", i)), map[string]any{"n": fmt.Sprint(i)}))
		if i == 2 {
			evt.WriteString("{\"torn\n")
		}
	}
	writeFile(t, dir, "backup.evt", evt.String())
	writeFile(t, dir, "backup.log.replay.1", spoolLine(t, s.logX, "error", "log-0", ts, []byte("log 0"), nil))

	r := runOmqs(t, runOpts{}, "--config", s.cfg, "spool", "replay")
	// Everything readable was replayed; the unreadable line is kept, which is
	// not success.
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, "6 records replayed and removed from the spool; 1 unreadable line kept")
	depth(t, ch, s.eventQ, 5)
	depth(t, ch, logQ, 1)
	for i := range 5 {
		d := get(t, ch, s.eventQ)
		if d.MessageId != fmt.Sprintf("ev-%d", i) || string(d.Body) != fmt.Sprintf("event %d", i) || d.Headers["n"] != fmt.Sprint(i) ||
			!d.Timestamp.Equal(ts.Add(time.Duration(i)*time.Second)) || d.RoutingKey != s.eventKey || d.DeliveryMode != amqp.Persistent {
			t.Errorf("event %d: id %q body %q headers %v time %v key %q mode %d", i, d.MessageId, d.Body, d.Headers, d.Timestamp, d.RoutingKey, d.DeliveryMode)
		}
	}
	if d := get(t, ch, logQ); d.MessageId != "log-0" || d.RoutingKey != "error" {
		t.Errorf("log: id %q key %q", d.MessageId, d.RoutingKey)
	}
	files := spoolFilesIn(t, dir)
	if len(files) != 1 || !strings.HasPrefix(filepath.Base(files[0]), "backup.evt.replay.") {
		t.Fatalf("files left: %v; want the replay file with the unreadable line", files)
	}
	if data, _ := os.ReadFile(files[0]); string(data) != "{\"torn\n" {
		t.Errorf("left in %s: %q", files[0], data)
	}

	// A second run has nothing readable to send; --drop-unreadable clears it.
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "spool", "replay", "--drop-unreadable")
	wantCode(t, r, 0)
	wantContains(t, "replay", r.stdout, "0 records replayed and removed from the spool, 1 unreadable line removed")
	if files := spoolFilesIn(t, dir); len(files) != 0 {
		t.Errorf("files left: %v", files)
	}
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "spool", "replay")
	wantCode(t, r, 0)
	wantContains(t, "replay", r.stdout, "no spool files in")
}

// A replay that fails halfway removes what the broker confirmed and keeps
// the rest for the next run, which finishes the work.
func TestSpoolReplayResumes(t *testing.T) {
	s := brokerSetup(t)
	ch := brokertest.Channel(t)
	// An exchange the replay cannot declare as it would (topic, durable).
	other := brokertest.Unique("omqs.test.x")
	brokertest.Cleanup(t, []string{other}, nil)
	if err := ch.ExchangeDeclare(other, "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.dir, "log")
	ts := time.Now().UTC()
	var evt strings.Builder
	for i := range 3 {
		evt.WriteString(spoolLine(t, s.eventX, s.eventKey, fmt.Sprintf("ev-%d", i), ts, []byte("before"), nil))
	}
	evt.WriteString(spoolLine(t, other, s.eventKey, "ev-3", ts, []byte("refused"), nil))
	evt.WriteString(spoolLine(t, s.eventX, s.eventKey, "ev-4", ts, []byte("after"), nil))
	writeFile(t, dir, "backup.evt", evt.String())

	r := runOmqs(t, runOpts{}, "--config", s.cfg, "spool", "replay", "--batch", "1", "--timeout", "5s")
	wantCode(t, r, 1)
	wantContains(t, "standard error", r.stderr, other, "3 records replayed and removed from the spool, 2 kept for a later replay")
	depth(t, ch, s.eventQ, 3)
	files := spoolFilesIn(t, dir)
	if len(files) != 1 {
		t.Fatalf("files left: %v", files)
	}
	var ids []string
	if _, err := spool.Read(files[0], func(r spool.Record) error { ids = append(ids, r.MessageID); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "ev-3,ev-4" {
		t.Fatalf("left in the spool: %v, want ev-3,ev-4", ids)
	}

	// Once the exchange is out of the way, the next run carries on.
	brokertest.Delete(t, []string{other}, nil)
	r = runOmqs(t, runOpts{}, "--config", s.cfg, "spool", "replay")
	wantCode(t, r, 0)
	wantContains(t, "replay", r.stdout, "2 records replayed and removed from the spool")
	depth(t, ch, s.eventQ, 4) // ev-3 went to the other exchange, where no queue is bound
	if files := spoolFilesIn(t, dir); len(files) != 0 {
		t.Errorf("files left: %v", files)
	}
}

// spoolFilesIn lists the files of dir, without temporary files.
func spoolFilesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, filepath.Join(dir, e.Name()))
	}
	return files
}

// declareBound declares a transient queue bound to exchange with key.
func declareBound(t *testing.T, ch *amqp.Channel, queue, exchange, key string) {
	t.Helper()
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
}
