package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/spool"
)

var spoolHelp = helpText{
	usage: "omqs spool (ls | show | replay) [--dir DIR] [flags] [FILE...]",
	about: `Works on the spool files a Manager writes when the broker stays unreachable:
DIR/backup.log (logs) and DIR/backup.evt (events), and the files
backup.log.replay.N and backup.evt.replay.N that a replay set aside. DIR is
--dir, else FOLDER of the [Log] section (./log/ by default). One JSON object a
line; a line that cannot be read (a torn write, a hand edit) is "unreadable".

  ls      for each file: records, size, oldest and newest record time, and
          unreadable lines
  show    prints the records of every spool file in DIR, or of the FILEs
          given: FILE:LINE TIME EXCHANGE KEY ID BODY (--json: one object each)
  replay  publishes the records, oldest file first, with the topology of
          [LogWorker] and [EventWorker], message ids, times, headers and
          content types kept, and waits for the broker's confirms batch by batch. Only what the
          broker confirmed is removed from the files: interrupted (Ctrl-C) or
          failing, a file is rewritten without its confirmed records, and a
          later run carries on. If the command is killed outright, the file is
          left whole and a later run sends its records again (with the same
          message ids). Unreadable lines stay in the file unless
          --drop-unreadable. The exit status is 0 only when every file was
          replayed and removed.

Do not replay a folder that a running application spools to: it replays its
spool itself once the broker is back.`,
	examples: `  omqs spool ls
  omqs spool ls --dir /var/log/myapp/
  omqs spool show --dir /var/log/myapp/ | grep email_notification
  omqs spool show --json log/backup.evt.replay.1764930000000000000
  omqs spool replay --dir /var/log/myapp/
`,
}

// lanes are the spool files of a Manager, with the worker whose topology a
// replay uses.
var lanes = []struct{ file, worker string }{
	{"backup.log", "LogWorker"},
	{"backup.evt", "EventWorker"},
}

func cmdSpool(e *env, args []string) error {
	fs := e.flags("spool")
	dir := fs.String("dir", "", "spool `DIR` (default: FOLDER of [Log], ./log/)")
	asJSON := fs.Bool("json", false, "show: one JSON object per record")
	timeout := fs.Duration("timeout", 30*time.Second, "replay: how long to try to connect, and to wait for the last confirms")
	batch := fs.Int("batch", 5000, "replay: records published before waiting for their confirms")
	drop := fs.Bool("drop-unreadable", false, "replay: remove unreadable lines instead of keeping them in the file")
	pos, err := e.parse(fs, spoolHelp, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no subcommand given: ls, show or replay")
	}
	sub, files := pos[0], pos[1:]
	if sub != "show" && len(files) > 0 {
		return usagef("unexpected argument %q", files[0])
	}
	switch sub {
	case "ls", "show", "replay":
	default:
		return usagef("unknown subcommand %q: ls, show or replay", sub)
	}
	if *batch < 1 {
		return usagef("--batch must be at least 1")
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	e.cmd = "omqs spool " + sub
	var l *loaded
	if *dir == "" || sub == "replay" {
		if l, err = e.load(); err != nil {
			return err
		}
		if *dir == "" {
			*dir = l.cfg.Log.Folder
		}
	}
	if len(files) == 0 {
		if files, err = spoolFiles(*dir); err != nil {
			return err
		}
	}
	switch sub {
	case "ls":
		return spoolLs(e, *dir, files)
	case "show":
		return spoolShow(e, files, *asJSON)
	default:
		return spoolReplay(e, l, *dir, files, replayOptions{batch: *batch, timeout: *timeout, drop: *drop})
	}
}

// spoolFiles lists the spool files of dir in replay order: for each lane,
// the files a replay set aside (oldest first), then the current file.
func spoolFiles(dir string) ([]string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("spool folder %s does not exist (give the FOLDER of [Log] with --dir)", dir)
		}
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	var files []string
	for _, ln := range lanes {
		p := filepath.Join(dir, ln.file)
		pending, err := spool.New(p).Pending()
		if err != nil {
			return nil, err
		}
		files = append(files, pending...)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	return files, nil
}

// fileStats is what spool ls says of one file.
type fileStats struct {
	records, unreadable int
	size                int64
	oldest, newest      time.Time
}

func statSpool(path string) (fileStats, error) {
	var s fileStats
	fi, err := os.Stat(path)
	if err != nil {
		return s, err
	}
	s.size = fi.Size()
	err = spool.Scan(path, func(l spool.Line) error {
		if !l.OK {
			s.unreadable++
			return nil
		}
		s.records++
		if ts := l.Record.Timestamp; !ts.IsZero() {
			if s.oldest.IsZero() || ts.Before(s.oldest) {
				s.oldest = ts
			}
			if ts.After(s.newest) {
				s.newest = ts
			}
		}
		return nil
	})
	return s, err
}

func spoolLs(e *env, dir string, files []string) error {
	if len(files) == 0 {
		fmt.Fprintf(e.stdout, "no spool files in %s\n", dir)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tRECORDS\tSIZE\tOLDEST\tNEWEST\tUNREADABLE")
	var total fileStats
	for _, p := range files {
		s, err := statSpool(p)
		if err != nil {
			tw.Flush()
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\n", p, s.records, size(s.size), stamp(s.oldest), stamp(s.newest), s.unreadable)
		total.records += s.records
		total.unreadable += s.unreadable
		total.size += s.size
	}
	if len(files) > 1 {
		fmt.Fprintf(tw, "total\t%d\t%s\t\t\t%d\n", total.records, size(total.size), total.unreadable)
	}
	return tw.Flush()
}

// size formats a number of bytes.
func size(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

func spoolShow(e *env, files []string, asJSON bool) error {
	unreadable := 0
	for _, p := range files {
		err := spool.Scan(p, func(l spool.Line) error {
			if !l.OK {
				unreadable++
				if asJSON {
					return writeJSON(e, jsonMessage{File: p, Line: l.Number, Unreadable: true, Text: string(clip(l.Raw))})
				}
				_, err := fmt.Fprintf(e.stdout, "%s:%d unreadable: %s\n", p, l.Number, printable(clip(l.Raw)))
				return err
			}
			r := l.Record
			body, err := r.Bytes()
			if err != nil {
				return err // Scan checked it
			}
			if asJSON {
				m := jsonMessage{File: p, Line: l.Number, Exchange: r.Exchange, Key: r.Key, ID: r.MessageID, ContentType: r.ContentType, Headers: jsonHeaders(r.Headers)}
				if !r.Timestamp.IsZero() {
					m.Time = &r.Timestamp
				}
				m.setBody(body)
				return writeJSON(e, m)
			}
			_, err = fmt.Fprintf(e.stdout, "%s:%d %s %s %s %s %s\n", p, l.Number, stamp(r.Timestamp), dash(r.Exchange), dash(r.Key), dash(r.MessageID), printable(body))
			return err
		})
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s does not exist", p)
			}
			return err
		}
	}
	if unreadable > 0 {
		fmt.Fprintf(e.stderr, "%s: %d unreadable %s\n", e.cmd, unreadable, pluralInt(unreadable, "line", "lines"))
	}
	return nil
}

// clip shortens an unreadable line for show.
func clip(b []byte) []byte {
	const max = 200
	if len(b) <= max {
		return b
	}
	return append(b[:max:max], "..."...)
}

type replayOptions struct {
	batch   int
	timeout time.Duration
	drop    bool
}

// replayer publishes spool records through one publisher per exchange.
type replayer struct {
	e    *env
	l    *loaded
	opts replayOptions
	pubs map[string]*omqs.AsyncPublisher // by exchange
	done atomic.Int64                    // records confirmed, for the progress bar
}

func spoolReplay(e *env, l *loaded, dir string, files []string, opts replayOptions) error {
	if l.isMemory() {
		return fmt.Errorf("%s is the in-process broker of this command: what it receives is gone when the command ends, so replaying to it would lose the spool; give an amqp:// URL with --url", l.cfg.Global.MQURL)
	}
	if len(files) == 0 {
		fmt.Fprintf(e.stdout, "no spool files in %s\n", dir)
		return nil
	}
	r := &replayer{e: e, l: l, opts: opts, pubs: map[string]*omqs.AsyncPublisher{}}
	defer r.stopAll()

	// Connect before touching any file, so that a bad URL changes nothing.
	for _, ln := range lanes {
		if _, err := r.publisher(r.worker(ln.worker).Exchange, ln.worker); err != nil {
			return err
		}
	}
	// Move the current files aside as a Manager does before it replays, so
	// that the files replayed are never appended to again.
	var all []string
	for _, ln := range lanes {
		taken, err := spool.New(filepath.Join(dir, ln.file)).Take()
		if err != nil {
			return err
		}
		all = append(all, taken...)
	}
	var total int64
	for _, p := range all {
		s, err := statSpool(p)
		if err != nil {
			return err
		}
		total += int64(s.records)
	}
	bar := startProgress(e.stderr, 300*time.Millisecond, func() string { return bar(r.done.Load(), total) })
	var (
		replayed, kept, unreadable int
		failure                    error
	)
	for _, p := range all {
		res, err := r.file(p)
		replayed += res.confirmed
		kept += res.kept
		unreadable += res.unreadable
		if err != nil {
			failure = err
			// Later files are newer: keep the order, replay them next time.
			break
		}
	}
	bar.end()
	summary := fmt.Sprintf("%d %s replayed and removed from the spool", replayed, pluralInt(replayed, "record", "records"))
	if kept > 0 {
		summary += fmt.Sprintf(", %d kept for a later replay", kept)
	}
	switch {
	case failure != nil && e.ctx.Err() != nil:
		return interrupted{"interrupted: " + summary}
	case failure != nil:
		return fmt.Errorf("%w (%s)", failure, summary)
	case unreadable > 0 && !opts.drop:
		return fmt.Errorf("%s; %d unreadable %s kept in the spool: look at them with omqs spool show, then run omqs spool replay --drop-unreadable",
			summary, unreadable, pluralInt(unreadable, "line", "lines"))
	}
	if unreadable > 0 {
		summary += fmt.Sprintf(", %d unreadable %s removed", unreadable, pluralInt(unreadable, "line", "lines"))
	}
	fmt.Fprintln(e.stdout, summary)
	return nil
}

func (r *replayer) worker(name string) omqs.WorkerConfig {
	if name == "LogWorker" {
		return r.l.cfg.LogWorker
	}
	return r.l.cfg.EventWorker
}

// publisher returns the started publisher of exchange: with the topology of
// the worker of that exchange, or of worker (without its queue) for an
// exchange the configuration does not name.
func (r *replayer) publisher(exchange, worker string) (*omqs.AsyncPublisher, error) {
	if p := r.pubs[exchange]; p != nil {
		return p, nil
	}
	mandatory := false
	var opts []omqs.Option
	switch exchange {
	case r.l.cfg.LogWorker.Exchange:
		opts = workerOptions(r.l.cfg.LogWorker)
	case r.l.cfg.EventWorker.Exchange:
		opts, mandatory = workerOptions(r.l.cfg.EventWorker), true
	default:
		w := r.worker(worker)
		opts = []omqs.Option{omqs.WithExchange(exchange, w.ExchangeType, w.ExchangeDurable), omqs.WithQueue("")}
		mandatory = worker == "EventWorker"
	}
	opts = append(opts,
		omqs.WithConfig(r.l.cfg),
		omqs.WithName("omqs spool replay"),
		omqs.WithLogger(r.e.logger()),
		omqs.WithMandatory(mandatory),
	)
	p, err := omqs.NewAsyncPublisher(opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.e.ctx, r.opts.timeout)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), r.opts.timeout)
		p.Stop(stopCtx)
		cancel()
		if r.e.ctx.Err() != nil {
			return nil, interrupted{"interrupted while connecting; nothing was replayed"}
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	r.pubs[exchange] = p
	return p, nil
}

func (r *replayer) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.timeout)
	defer cancel()
	for _, p := range r.pubs {
		p.Stop(ctx)
	}
}

// fileResult is what became of one file's records.
type fileResult struct {
	confirmed  int // confirmed, so removed from the file
	kept       int // left in the file
	unreadable int
}

// file replays the file at path in batches and then removes it, or rewrites
// it without the records the broker confirmed. It returns an error when it
// could not replay every record.
func (r *replayer) file(path string) (fileResult, error) {
	var res fileResult
	worker := "EventWorker"
	if strings.HasPrefix(filepath.Base(path), "backup.log") {
		worker = "LogWorker"
	}
	type sent struct {
		p    *omqs.AsyncPublisher
		base omqs.LaneStats
		n    int
	}
	var (
		pending   = map[*omqs.AsyncPublisher]*sent{}
		inBatch   int
		confirmed int // records of the file confirmed so far, in order
	)
	// flush waits for the batch's confirms; the batch counts as confirmed
	// only when every message in it was.
	flush := func() error {
		defer clear(pending)
		for _, s := range pending {
			if err := s.p.Flush(r.e.ctx); err != nil {
				return err
			}
		}
		for _, s := range pending {
			st := s.p.Stats()
			if got := st.Confirmed - s.base.Confirmed; got < uint64(s.n) {
				return fmt.Errorf("the broker did not confirm %d of %d records (nacked %d, lost %d)",
					uint64(s.n)-got, s.n, st.Nacked-s.base.Nacked, st.Dropped-s.base.Dropped)
			}
			if ret := st.Returned - s.base.Returned; ret > 0 {
				fmt.Fprintf(r.e.stderr, "%s: %d event(s) of %s were returned as unroutable (no queue bound to their key)\n", r.e.cmd, ret, path)
			}
		}
		confirmed += inBatch
		r.done.Add(int64(inBatch))
		inBatch = 0
		return nil
	}
	err := spool.Scan(path, func(l spool.Line) error {
		if !l.OK {
			res.unreadable++
			return nil
		}
		rec := l.Record
		p, err := r.publisher(rec.Exchange, worker)
		if err != nil {
			return err
		}
		body, err := rec.Bytes()
		if err != nil {
			return err
		}
		s := pending[p]
		if s == nil {
			s = &sent{p: p, base: p.Stats()}
			pending[p] = s
		}
		msg := omqs.Message{Key: rec.Key, Body: body, MessageID: rec.MessageID, Timestamp: rec.Timestamp, Headers: rec.Headers, ContentType: rec.ContentType}
		if err := p.PublishMessage(r.e.ctx, msg); err != nil {
			return fmt.Errorf("%s:%d: %w", path, l.Number, err)
		}
		s.n++
		inBatch++
		if inBatch >= r.opts.batch {
			return flush()
		}
		return nil
	})
	if err == nil && inBatch > 0 {
		err = flush()
	}
	res.confirmed = confirmed
	left, werr := r.rewrite(path, confirmed, res.unreadable)
	res.kept = left
	if werr != nil {
		if err == nil {
			return res, fmt.Errorf("%s was replayed but could not be removed or rewritten: %w", path, werr)
		}
		return res, fmt.Errorf("%v; and %s could not be rewritten without its %d confirmed records: %w", err, path, confirmed, werr)
	}
	return res, err
}

// rewrite removes the first n records of the file at path (and its
// unreadable lines, with --drop-unreadable): it removes the file when nothing
// is left, and otherwise replaces it atomically with a copy of what is left.
// It returns how many records are left.
func (r *replayer) rewrite(path string, n, unreadable int) (left int, err error) {
	records := 0
	if err := spool.Scan(path, func(l spool.Line) error {
		if l.OK {
			records++
		}
		return nil
	}); err != nil {
		return 0, err
	}
	left = max(records-n, 0)
	dropBad := r.opts.drop && unreadable > 0
	switch {
	case left == 0 && (unreadable == 0 || dropBad):
		return 0, os.Remove(path)
	case n == 0 && !dropBad:
		return left, nil // unchanged
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".omqs-replay-*")
	if err != nil {
		return left, err
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing to remove
	w := bufio.NewWriter(tmp)
	seen := 0
	err = spool.Scan(path, func(l spool.Line) error {
		switch {
		case !l.OK && dropBad:
			return nil
		case l.OK && seen < n:
			seen++
			return nil
		case l.TooLong:
			return fmt.Errorf("%s:%d: the line is longer than any record and cannot be kept; rerun with --drop-unreadable to drop it", path, l.Number)
		}
		w.Write(l.Raw)
		return w.WriteByte('\n')
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return left, err
}
