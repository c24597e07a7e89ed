// Package safefile opens the files OMQS keeps in its folder (spool files,
// log files) so that nobody else can steer them: the last component of a
// path is never followed when it is a symbolic link, new files and folders
// are private to the process's user, and a file read back for replay must be
// a regular file owned by that user. Read reads the small files a
// deployment names (configuration files, PEM certificates and keys) the same
// way: only regular files, and never more than a limit.
package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// FileMode is the mode of the files OMQS creates; DirMode that of the folders.
const (
	FileMode fs.FileMode = 0o600
	DirMode  fs.FileMode = 0o700
)

var (
	// ErrSymlink: the path names a symbolic link, which is not followed.
	ErrSymlink = errors.New("is a symbolic link, which OMQS does not follow")
	// ErrNotRegular: the file is not a regular file.
	ErrNotRegular = errors.New("is not a regular file")
	// ErrNotOwned: the file belongs to another user than the process's.
	ErrNotOwned = errors.New("is not owned by the process's user")
	// ErrOpenFolder: the folder can be written by its group or by others.
	ErrOpenFolder = errors.New("can be written by its group or by others")
)

// OpenAppend opens path for appending (reading too, with read), creating it
// with FileMode. It does not follow a symbolic link at path.
func OpenAppend(path string, read bool) (*os.File, error) {
	flag := os.O_WRONLY
	if read {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|os.O_APPEND|os.O_CREATE|oNoFollow, FileMode)
	if err != nil {
		return nil, linkError(path, err)
	}
	if err := checkNotLink(path, f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenOwned opens path for reading if it is a regular file owned by the
// process's user. It does not follow a symbolic link at path.
func OpenOwned(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return nil, linkError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case !fi.Mode().IsRegular():
		err = ErrNotRegular
	case !ownedByMe(fi):
		err = ErrNotOwned
	}
	if err == nil {
		err = checkNotLink(path, f)
	}
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// MkdirAll creates dir and its missing parents with DirMode.
func MkdirAll(dir string) error { return os.MkdirAll(dir, DirMode) }

// CheckFolder returns an error if dir exists and is not a folder, or can be
// written by its group or by others (who could then plant files or links
// there). A folder that does not exist yet is fine: it is created private.
func CheckFolder(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("folder %s is not a folder", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 && groupOthersMatter {
		return fmt.Errorf("folder %s (mode %04o) %w: it holds the spool and log files, so remove that permission (chmod go-w %s) or choose another folder",
			dir, perm, ErrOpenFolder, dir)
	}
	return nil
}

// linkError replaces the error of opening a symbolic link without following
// it (ELOOP on Linux, EMLINK on some BSDs) with a clear one.
func linkError(path string, err error) error {
	if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return &fs.PathError{Op: "open", Path: path, Err: ErrSymlink}
	}
	return err
}

// checkNotLink is for systems without O_NOFOLLOW: path must not be a link
// now that f is open.
func checkNotLink(path string, f *os.File) error {
	if oNoFollow != 0 {
		return nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return &fs.PathError{Op: "open", Path: path, Err: ErrSymlink}
	}
	return nil
}
