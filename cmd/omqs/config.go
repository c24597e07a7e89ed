package main

import (
	"bufio"
	"fmt"
	"strings"
	"text/tabwriter"
)

var configHelp = helpText{
	usage: "omqs config [--file FILE]",
	about: `Loads the configuration with the library's own loader and checks it, then prints
every setting, section by section, with its effective value and where it came
from: --url or $OMQS_MQURL, FILE:LINE for a line of the file (a [DEFAULT] line
for a key the section leaves out), or "default". The password of MQURL is
printed as xxxxx. The warnings of the loader (unknown keys, keys set twice)
follow.

The file is --file, else --config, else $OMQS_CONFIG, else ./OMQS.cfg if it
exists; without one the built-in defaults are printed.

The exit status is 1 when the file cannot be read or a setting is not valid;
the error names the file, the line and the key.`,
	examples: `  omqs config
  omqs config --file /etc/myapp/OMQS.cfg
  OMQS_MQURL=amqp://app:secret@mq1:5672/prod omqs config
  omqs config --file OMQS.cfg >/dev/null && echo valid
`,
}

func cmdConfig(e *env, args []string) error {
	fs := e.flags("config")
	fs.Func("file", "configuration `FILE` to check (the same as --config)", func(s string) error {
		if s == "" {
			return fmt.Errorf("empty file name")
		}
		e.config, e.configFlag = s, "--file"
		return nil
	})
	pos, err := e.parse(fs, configHelp, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	l, err := e.load()
	if err != nil {
		return err
	}
	if l.file == "" {
		fmt.Fprintf(e.stdout, "; built-in defaults: no --config, no $%s and no ./%s\n", envConfig, cfgFile)
	} else {
		fmt.Fprintf(e.stdout, "; read from %s (named by %s)\n", l.file, l.fileFrom)
	}
	// Config.String writes every setting, redacted, in the syntax of
	// OMQS.cfg; each line is read back here and annotated with its origin.
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	section := ""
	sc := bufio.NewScanner(strings.NewReader(l.cfg.String()))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, ";"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			tw.Flush()
			section = line[1 : len(line)-1]
			fmt.Fprintf(e.stdout, "\n[%s]\n", section)
			continue
		}
		key, value, _ := strings.Cut(line, " =")
		value = strings.ReplaceAll(strings.TrimPrefix(value, " "), "%%", "%")
		if value == "" {
			value = `""`
		}
		origin := l.cfg.Origin(section, key)
		if section == "Global" && key == "MQURL" && l.urlFrom != "" {
			origin = l.urlFrom
		}
		if origin == "" {
			origin = "default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", key, value, origin)
	}
	tw.Flush()
	if len(l.cfg.Warnings) > 0 {
		fmt.Fprintf(e.stdout, "\n; %d %s:\n", len(l.cfg.Warnings), pluralInt(len(l.cfg.Warnings), "warning", "warnings"))
		for _, w := range l.cfg.Warnings {
			fmt.Fprintf(e.stdout, "; warning: %s\n", oneLine(w))
		}
	}
	return nil
}

func pluralInt(n int, one, many string) string { return plural(int64(n), one, many) }
