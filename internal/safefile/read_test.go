package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readWithin calls Read in a goroutine and fails the test if it has not
// returned within d.
func readWithin(t *testing.T, d time.Duration, name string, limit int64) ([]byte, error) {
	t.Helper()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := Read(name, limit)
		done <- result{data, err}
	}()
	select {
	case r := <-done:
		return r.data, r.err
	case <-time.After(d):
		t.Fatalf("Read(%s) has not returned after %v", name, d)
		return nil, nil
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.txt")
	if err := os.WriteFile(ok, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := readWithin(t, 5*time.Second, ok, 5)
	if err != nil || string(data) != "hello" {
		t.Fatalf("Read = %q, %v", data, err)
	}

	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, []byte("123456"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path, want string
	}{
		{"too large", big, "larger than the limit of 5 bytes"},
		{"directory", dir, "not a regular file (a directory)"},
		{"fifo", fifo, "not a regular file (a named pipe)"},
		{"link to a fifo", link, "not a regular file (a named pipe)"},
		{"device", "/dev/zero", "not a regular file (a character device)"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path == "/dev/zero" {
				if _, err := os.Stat(tt.path); err != nil {
					t.Skip(err)
				}
			}
			data, err := readWithin(t, 5*time.Second, tt.path, 5)
			if err == nil {
				t.Fatalf("read %d bytes, want an error", len(data))
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want the path and %q", err, tt.want)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) {
				t.Errorf("error %v is not an *fs.PathError", err)
			}
		})
	}
	if _, err := Read(big, 5); !errors.As(err, new(*TooLargeError)) {
		t.Errorf("too large: %v is not a *TooLargeError", err)
	}
	if _, err := Read(fifo, 5); !errors.Is(err, ErrNotRegular) {
		t.Errorf("fifo: %v is not ErrNotRegular", err)
	}
	if _, err := Read(filepath.Join(dir, "nope"), 5); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v is not fs.ErrNotExist", err)
	}
}

// TestReadGrowing checks the limit on the bytes read, not only on the size
// Stat reports: a file in /proc says it has 0 bytes.
func TestReadGrowing(t *testing.T) {
	const path = "/proc/self/status"
	if _, err := os.Stat(path); err != nil {
		t.Skip(err)
	}
	if _, err := Read(path, 16); !errors.As(err, new(*TooLargeError)) {
		t.Errorf("Read(%s, 16) = %v, want a *TooLargeError", path, err)
	}
}
