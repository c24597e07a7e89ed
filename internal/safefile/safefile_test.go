package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestCheckFolder(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("permission bits do not say who may write")
	}
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mode os.FileMode // 0: not created
		want error       // nil: accepted
	}{
		{"missing", 0, nil},
		{"private", 0o700, nil},
		{"readable", 0o755, nil},
		{"group-writable", 0o770, ErrOpenFolder},
		{"world-writable", 0o707, ErrOpenFolder},
		{"sticky", 0o777 | os.ModeSticky, ErrOpenFolder},
	} {
		dir := filepath.Join(base, c.name)
		if c.mode != 0 {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, c.mode); err != nil {
				t.Fatal(err)
			}
		}
		if err := CheckFolder(dir); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: CheckFolder = %v, want %v", c.name, err, c.want)
		}
	}
	if err := CheckFolder(file); err == nil {
		t.Error("CheckFolder accepted a file")
	}
}

func TestOpenOwned(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenOwned(reg)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := OpenOwned(dir); !errors.Is(err, ErrNotRegular) {
		t.Errorf("OpenOwned(folder) = %v, want ErrNotRegular", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(reg, link); err != nil {
		t.Skip(err)
	}
	if _, err := OpenOwned(link); !errors.Is(err, ErrSymlink) {
		t.Errorf("OpenOwned(link) = %v, want ErrSymlink", err)
	}
	if _, err := OpenAppend(link, false); !errors.Is(err, ErrSymlink) {
		t.Errorf("OpenAppend(link) = %v, want ErrSymlink", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(reg, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenOwned(reg); !errors.Is(err, ErrNotOwned) {
			t.Errorf("OpenOwned(another user's file) = %v, want ErrNotOwned", err)
		}
	}
	f, err = OpenAppend(filepath.Join(dir, "new"), true)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	f.Close()
	if fi.Mode().Perm() != FileMode {
		t.Errorf("new file mode %v, want %v", fi.Mode().Perm(), FileMode)
	}
}
