package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/omqs-go/omqs"
)

// Environment variables omqs reads, as the library and its examples do.
const (
	envURL    = "OMQS_MQURL"
	envConfig = "OMQS_CONFIG"
	cfgFile   = "OMQS.cfg"
)

// env is what every command works with: the command line's global settings,
// the standard streams and the context that SIGINT and SIGTERM end.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	cmd    string // "omqs send", for messages

	url        string // --url
	config     string // --config (or config --file)
	configFlag string // the flag that set config
}

// globalFlags registers --url and --config on fs. Each command's flag set
// has them too, so that they may come before or after the command.
func (e *env) globalFlags(fs *flag.FlagSet) {
	fs.Func("url", "broker `URL` (default: $OMQS_MQURL, else MQURL of the configuration)", func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errors.New("empty URL")
		}
		e.url = s
		return nil
	})
	fs.Func("config", "configuration `FILE` (default: $OMQS_CONFIG, else ./OMQS.cfg if it exists, else the built-in defaults)", func(s string) error {
		if s == "" {
			return errors.New("empty file name")
		}
		e.config, e.configFlag = s, "--config"
		return nil
	})
}

// helpText is a command's help: its usage line, what it does and examples.
type helpText struct {
	usage, about, examples string
}

// flags returns the flag set of a command.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("omqs "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	return fs
}

// parse parses args with fs, accepting flags before and after the
// positional arguments (until "--"), and returns the positional arguments.
// --help prints h to standard output and returns errHelp.
func (e *env) parse(fs *flag.FlagSet, h helpText, args []string) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			e.printHelp(fs, h)
			return nil, errHelp
		}
		if err != nil {
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (e *env) printHelp(fs *flag.FlagSet, h helpText) {
	w := e.stdout
	fmt.Fprintf(w, "Usage:\n  %s\n\n%s\n\nFlags:\n", h.usage, strings.TrimSpace(h.about))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nExamples:\n%s", h.examples)
}

// setFlags returns the names of the flags the command line set.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// loaded is the configuration a command runs with and where it came from.
type loaded struct {
	cfg      *omqs.Config
	file     string // "" for the built-in defaults
	fileFrom string // "--config", "$OMQS_CONFIG", "./OMQS.cfg" or ""
	urlFrom  string // "--url", "$OMQS_MQURL", or "" (the configuration)
}

// load reads the configuration as the library finds it, then applies --url
// or $OMQS_MQURL, and checks the result.
func (e *env) load() (*loaded, error) {
	l := &loaded{}
	switch {
	case e.config != "":
		l.file, l.fileFrom = e.config, e.configFlag
	case os.Getenv(envConfig) != "":
		l.file, l.fileFrom = os.Getenv(envConfig), "$"+envConfig
	default:
		if _, err := os.Stat(cfgFile); err == nil {
			l.file, l.fileFrom = cfgFile, "./"+cfgFile
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", cfgFile, err)
		}
	}
	if l.file == "" {
		l.cfg = omqs.DefaultConfig()
	} else {
		c, err := omqs.LoadConfig(l.file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("configuration file %s (named by %s) does not exist", l.file, l.fileFrom)
			}
			return nil, err
		}
		l.cfg = c
	}
	switch {
	case e.url != "":
		l.cfg.Global.MQURL, l.urlFrom = e.url, "--url"
	case os.Getenv(envURL) != "":
		l.cfg.Global.MQURL, l.urlFrom = os.Getenv(envURL), "$"+envURL
	}
	if err := l.cfg.Validate(); err != nil {
		if l.urlFrom != "" && strings.Contains(err.Error(), "] MQURL:") {
			msg := err.Error()
			return nil, fmt.Errorf("%s: %s", l.urlFrom, strings.TrimSpace(msg[strings.Index(msg, "] MQURL:")+len("] MQURL:"):]))
		}
		return nil, err
	}
	return l, nil
}

// isMemory reports whether the broker URL names the in-process broker.
func (l *loaded) isMemory() bool {
	return strings.HasPrefix(strings.TrimSpace(strings.ToLower(l.cfg.Global.MQURL)), "memory://")
}

// logger returns the logger for the library's own lines: warnings and
// errors (reconnects, returned messages) on standard error.
func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // one line per problem, as the command's own errors
			}
			return a
		},
	}))
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress redraws one status line on a terminal every tick until stop.
type progress struct {
	stop chan struct{}
	wg   sync.WaitGroup
	w    io.Writer
	line func() string
}

// startProgress starts redrawing line() on w when w is a terminal, after
// delay (so that short runs print nothing). It returns nil otherwise; a nil
// *progress does nothing.
func startProgress(w io.Writer, delay time.Duration, line func() string) *progress {
	if !isTerminal(w) {
		return nil
	}
	p := &progress{stop: make(chan struct{}), w: w, line: line}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			fmt.Fprintf(p.w, "\r%s\x1b[K", p.line())
			select {
			case <-p.stop:
				fmt.Fprintf(p.w, "\r%s\x1b[K\n", p.line())
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// end stops the redrawing, leaving the last line on the terminal.
func (p *progress) end() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}

// bar draws a progress bar of done out of total.
func bar(done, total int64) string {
	const width = 30
	filled := 0
	if total > 0 {
		filled = int(done * width / total)
	}
	filled = min(filled, width)
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "] " +
		strconv.FormatInt(done, 10) + "/" + strconv.FormatInt(total, 10)
}

// printable returns body as it is when it is one line of printable UTF-8
// text, and quoted Go-style otherwise, so that a message is one line.
func printable(body []byte) string {
	if utf8.Valid(body) {
		ok := true
		for _, r := range string(body) {
			if !unicode.IsPrint(r) && r != ' ' {
				ok = false
				break
			}
		}
		if ok && len(body) > 0 && body[0] != '"' {
			return string(body)
		}
	}
	return strconv.Quote(string(body))
}

// stamp formats a message time; the zero time is "-".
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02T15:04:05.000Z07:00")
}

// stampSeconds formats an AMQP timestamp, which has whole seconds.
func stampSeconds(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// dash returns s, or "-" when it is empty, for columns of text.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
