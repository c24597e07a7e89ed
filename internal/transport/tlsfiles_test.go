package transport

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/testcerts"
)

// parseWithin runs ParseURLs(s) and fails the test if it has not returned
// within d.
func parseWithin(t *testing.T, s string, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := ParseURLs(s)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("ParseURLs(%q) has not returned after %v", s, d)
		return nil
	}
}

// TestTLSFilesNotRegular checks that the PEM files an amqps URL names are
// refused at once, naming the file, when they are not small regular files.
func TestTLSFilesNotRegular(t *testing.T) {
	dir := t.TempDir()
	certs, err := testcerts.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "pipe.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.pem")
	ca, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	// A real certificate followed by padding: only the size is wrong.
	if err := os.WriteFile(big, append(ca, strings.Repeat("#\n", MaxPEMSize/2)...), 0o600); err != nil {
		t.Fatal(err)
	}
	amqps := func(q url.Values) string { return "amqps://u:s3cret@localhost/?" + q.Encode() }
	for _, tt := range []struct {
		name, url, path, want string
	}{
		{"cacertfile dev zero", amqps(url.Values{"cacertfile": {"/dev/zero"}}), "/dev/zero", "not a regular file (a character device)"},
		{"cacertfile fifo", amqps(url.Values{"cacertfile": {fifo}}), fifo, "not a regular file (a named pipe)"},
		{"cacertfile directory", amqps(url.Values{"cacertfile": {dir}}), dir, "not a regular file (a directory)"},
		{"cacertfile too large", amqps(url.Values{"cacertfile": {big}}), big, "larger than the limit of 1048576 bytes"},
		{"certfile fifo", amqps(url.Values{"certfile": {fifo}, "keyfile": {certs.ClientKey}}), fifo, "not a regular file (a named pipe)"},
		{"keyfile fifo", amqps(url.Values{"certfile": {certs.ClientCert}, "keyfile": {fifo}}), fifo, "not a regular file (a named pipe)"},
		{"keyfile dev zero", amqps(url.Values{"certfile": {certs.ClientCert}, "keyfile": {"/dev/zero"}}), "/dev/zero", "not a regular file (a character device)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); err != nil {
				t.Skip(err)
			}
			err := parseWithin(t, tt.url, 5*time.Second)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want the path and %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	// The files as they are still load.
	ok := amqps(url.Values{"cacertfile": {certs.CAFile}, "certfile": {certs.ClientCert}, "keyfile": {certs.ClientKey}})
	eps, err := ParseURLs(ok)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlsConfigFor(eps[0].URI)
	if err != nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Fatalf("tlsConfigFor: %+v, %v", cfg, err)
	}
}
