package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"send", "--help"}, {"tail", "-h"}, {"config", "--help"}, {"spool", "--help"}, {"ping", "--help"},
		{"help", "send"}, {"--url", "memory://", "ping", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runOmqs(t, runOpts{}, args...)
			wantCode(t, r, 0)
			wantContains(t, "help", r.stdout, "Usage:", "Examples:", "omqs")
			if r.stderr != "" {
				t.Errorf("help wrote to standard error: %q", r.stderr)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--nope", "ping"}, "flag provided but not defined: -nope"},
		{[]string{"send", "--bogus", "x"}, "flag provided but not defined: -bogus"},
		{[]string{"send"}, "no message given"},
		{[]string{"send", "a", "b"}, "give one MESSAGE"},
		{[]string{"send", "--log", "info", "--event", "k", "x"}, "not both"},
		{[]string{"send", "--timeout", "soon", "x"}, `invalid value "soon" for flag -timeout`},
		{[]string{"send", "--header", "novalue", "x"}, "is not NAME=VALUE"},
		{[]string{"tail", "extra"}, `unexpected argument "extra"`},
		{[]string{"tail", "--keys", " , "}, "--keys is empty"},
		{[]string{"spool"}, "no subcommand given"},
		{[]string{"spool", "rm"}, `unknown subcommand "rm"`},
		{[]string{"spool", "ls", "file"}, `unexpected argument "file"`},
		{[]string{"ping", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--url", "", "ping"}, "empty URL"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runOmqs(t, runOpts{}, tt.args...)
			wantCode(t, r, 2)
			wantContains(t, "standard error", r.stderr, tt.want)
			if n := strings.Count(r.stderr, "\n"); n != 1 {
				t.Errorf("%d lines on standard error, want one:\n%s", n, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("standard output: %q", r.stdout)
			}
		})
	}
}

// Flags are accepted before and after the command and its arguments.
func TestFlagPlacement(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "memory://", "config"},
		{"config", "--url", "memory://"},
		{"config", "-url=memory://"},
	} {
		r := runOmqs(t, runOpts{}, args...)
		wantCode(t, r, 0)
		if !regexp.MustCompile(`(?m)^MQURL +memory:// +--url$`).MatchString(r.stdout) {
			t.Errorf("config does not show MQURL memory:// from --url:\n%s", r.stdout)
		}
	}
	r := runOmqs(t, runOpts{}, "--url", "memory://", "send", "hello", "--log", "debug", "--quiet")
	wantCode(t, r, 0)
	if r.stdout != "" {
		t.Errorf("--quiet printed %q", r.stdout)
	}
	wantContains(t, "send to memory://", r.stderr, "in-process broker")
}
