package omqs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadConfigNotARegularFile checks that LoadConfig refuses, at once and
// naming the file, what is not a small regular file: it never reads
// /dev/zero to the end nor waits for a writer on a named pipe.
func TestLoadConfigNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "OMQS.cfg.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.cfg")
	if err := os.WriteFile(big, []byte("[Global]\n"+strings.Repeat(";\n", 40000)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, path, want string }{
		{"dev zero", "/dev/zero", "not a regular file (a character device)"},
		{"fifo", fifo, "not a regular file (a named pipe)"},
		{"directory", dir, "not a regular file (a directory)"},
		{"too large", big, "larger than the limit of 65536 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); err != nil {
				t.Skip(err)
			}
			err := cfgLoadWithin(t, tt.path, 5*time.Second)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want the path and %q", err, tt.want)
			}
		})
	}
}

// cfgLoadWithin runs LoadConfig(path) and fails the test if it has not
// returned within d.
func cfgLoadWithin(t *testing.T, path string, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := LoadConfig(path)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("LoadConfig(%s) has not returned after %v", path, d)
		return nil
	}
}
