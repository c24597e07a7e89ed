package omqs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omqs-go/omqs/internal/safefile"
)

// Log files may quote messages: they are created readable by their owner
// only, and a symbolic link in their place is not followed.
func TestLogFilesArePrivateAndFollowNoLink(t *testing.T) {
	t.Parallel()
	for _, rot := range []struct{ name, kind string }{{"plain", ""}, {"size", "size"}, {"time", "time"}} {
		t.Run(rot.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "logs")
			cfg := fileConfig(dir, "%(message)s")
			cfg.Rotation, cfg.RotationType = rot.kind != "", rot.kind
			lm, err := NewLogManager("", "omqs.log", WithLogConfig(cfg))
			if err != nil {
				t.Fatal(err)
			}
			lm.Logger().Info("hello")
			path := lm.FileName()
			if err := lm.Close(); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{dir, path} {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s: %v, %v; want no access for group and others", p, fi.Mode().Perm(), err)
				}
			}

			victim := filepath.Join(t.TempDir(), "victim")
			if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, "link.log")
			if err := os.Symlink(victim, link); err != nil {
				t.Skip(err)
			}
			lm, err = NewLogManager("", "link.log", WithLogConfig(cfg))
			if err == nil {
				lm.Logger().Info("appended to the victim")
				lm.Close()
				t.Fatal("NewLogManager opened a symbolic link")
			}
			if !errors.Is(err, safefile.ErrSymlink) {
				t.Errorf("NewLogManager: %v, want ErrSymlink", err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
				t.Errorf("victim holds %q", b)
			}
		})
	}
}

// A log line quotes at most the start of a body.
func TestBodyPrefix(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", 32), strings.Repeat("a", 32)},
		{strings.Repeat("a", 33), strings.Repeat("a", 32) + "…"},
		{strings.Repeat("a", 31) + "éé", strings.Repeat("a", 31) + "…"},
		{"\xff\xfe", "\uFFFD"},
	} {
		if got := bodyPrefix([]byte(c.in)); got != c.want {
			t.Errorf("bodyPrefix(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
