// Command omqs is the operator's tool for an OMQS deployment: it sends test
// messages, watches the log and event exchanges, checks the configuration,
// inspects and replays the spool files, and checks that the broker answers.
// It reads the same OMQS.cfg and environment as the library.
//
// Usage:
//
//	omqs [--url URL] [--config FILE] COMMAND [flags] [arguments]
//
// The commands:
//
//	send     publish a message, or one per line of standard input, with confirms
//	tail     print what flows through the event (or log) exchange
//	config   print the effective configuration and where each value came from
//	spool    list, show or replay the spool files (backup.log, backup.evt)
//	ping     connect to the broker, report its version and timings
//
// The configuration is the file of --config, else $OMQS_CONFIG, else
// ./OMQS.cfg if it exists, else the built-in defaults. The broker URL is
// --url, else $OMQS_MQURL, else MQURL of the configuration. Every command has
// --help with examples. Errors are one line on standard error; the exit
// status is 0 on success, 1 on failure and 2 for a usage error.
//
// Install it with
//
//	go install github.com/omqs-go/omqs/cmd/omqs@latest
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/omqs-go/omqs/internal/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGINT or SIGTERM asks the command to wind up (report what
	// was confirmed, keep what was not); a second one kills it.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand of omqs.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

var commands = []command{
	{"send", "publish a message, or one per line of standard input, with confirms", cmdSend},
	{"tail", "print what flows through the event (or log) exchange", cmdTail},
	{"config", "print the effective configuration and where each value came from", cmdConfig},
	{"spool", "list, show or replay the spool files (backup.log, backup.evt)", cmdSpool},
	{"ping", "connect to the broker, report its version and timings", cmdPing},
}

const mainUsage = `omqs: send, watch and check the messages of an OMQS deployment

Usage:
  omqs [--url URL] [--config FILE] COMMAND [flags] [arguments]

Commands:
%s
Global flags (also accepted after COMMAND):
  --url URL       broker URL (default: $OMQS_MQURL, else MQURL of the configuration)
  --config FILE   configuration file (default: $OMQS_CONFIG, else ./OMQS.cfg if it
                  exists, else the built-in defaults)

Run "omqs COMMAND --help" for a command's flags and examples.

Examples:
  omqs ping
  omqs send --event email_notification '{"email":"someone@example.com"}'
  omqs tail --log --keys error,fatal
  omqs config --file /etc/myapp/OMQS.cfg
  omqs spool ls
`

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// errHelp ends a command that printed its help: exit status 0.
var errHelp = errors.New("help printed")

// interrupted is the error of a command ended by SIGINT or SIGTERM after it
// reported what it had done.
type interrupted struct{ msg string }

func (e interrupted) Error() string { return e.msg }

// run is omqs with its arguments and standard streams; it returns the exit
// status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("omqs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	help := func(w io.Writer) {
		var b strings.Builder
		for _, c := range commands {
			fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(w, mainUsage, b.String())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "omqs: %v (see omqs --help)\n", err)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "omqs: no command given; the commands are send, tail, config, spool, ping (see omqs --help)")
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		if len(rest) == 1 {
			help(stdout)
			return exitOK
		}
		name, rest = rest[1], []string{rest[1], "--help"}
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		e.cmd = "omqs " + c.name
		return e.finish(c.run(e, rest[1:]))
	}
	fmt.Fprintf(stderr, "omqs: unknown command %q; the commands are send, tail, config, spool, ping (see omqs --help)\n", name)
	return exitUsage
}

// finish prints err as one line and returns the exit status it calls for.
func (e *env) finish(err error) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "%s: %s (see %s --help)\n", e.cmd, oneLine(ue.msg), e.cmd)
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "%s: %s\n", e.cmd, oneLine(err.Error()))
	var in interrupted
	if errors.As(err, &in) {
		return 130
	}
	return exitFailure
}

// oneLine makes an error message one line, without the library's "omqs: "
// prefix (the command name stands before it) and without any password.
func oneLine(msg string) string {
	msg = strings.TrimPrefix(msg, "omqs: ")
	msg = strings.ReplaceAll(msg, ": omqs: ", ": ")
	msg = strings.ReplaceAll(msg, "\r", " ")
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return transport.Redact(msg)
}
