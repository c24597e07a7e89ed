package spool

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/omqs-go/omqs/internal/safefile"
)

// A replay that is interrupted (Stop, a crash) leaves its file for the next
// one. So that the next replay does not send again what the broker already
// confirmed, the replaying process records, beside the file, the end of the
// longest prefix of the file whose every line was handled (delivered,
// spooled again or set aside): PATH.done, written with SaveMark. Replay,
// Read and Remaining start after that mark; Scan ignores it and sees every
// line.
//
// A mark names the file's size and the bytes just before the offset. A mark
// that does not fit the file (the file was rewritten, or the mark was
// forged or is not owned by the process's user) is ignored: the file is
// read from its start again, which can send a message twice but never skips
// one.

// DonePath returns the file holding the progress mark of the replay file at
// path: PATH.done. It does not end with digits, so it is no replay file.
func DonePath(path string) string { return path + ".done" }

const (
	markMagic = "omqs-spool-mark 1"
	markTail  = 64  // bytes before the offset a mark holds
	markMax   = 512 // the largest mark file read
)

// SaveMark records that every line of the replay file at path before the
// offset end was handled: the next Replay or Read of the file starts there.
// end must be the end of a line. The mark is written to a temporary file,
// synced and renamed over PATH.done, so that it is either the old mark or
// the new one.
func SaveMark(path string, end int64) error {
	f, err := safefile.OpenOwned(path)
	if err != nil {
		return fmt.Errorf("spool: mark: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("spool: mark: %w", err)
	}
	if end <= 0 || end > fi.Size() {
		return fmt.Errorf("spool: mark %s: offset %d outside the file's %d bytes", path, end, fi.Size())
	}
	tail := make([]byte, min(end, markTail))
	if _, err := f.ReadAt(tail, end-int64(len(tail))); err != nil {
		return fmt.Errorf("spool: mark %s: %w", path, err)
	}
	if tail[len(tail)-1] != '\n' {
		return fmt.Errorf("spool: mark %s: offset %d is not the end of a line", path, end)
	}
	text := fmt.Sprintf("%s %d %d %s\n", markMagic, end, fi.Size(), hex.EncodeToString(tail))
	tmp, err := os.CreateTemp(filepath.Dir(path), ".omqs-mark-*")
	if err != nil {
		return fmt.Errorf("spool: mark: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing to remove
	_, err = tmp.WriteString(text)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), DonePath(path))
	}
	if err != nil {
		return fmt.Errorf("spool: mark %s: %w", path, err)
	}
	return nil
}

// markOf returns where reading f, the replay file at path, starts: the
// offset of its mark when there is one that fits f, or 0.
func markOf(path string, f *os.File) int64 {
	m, err := safefile.OpenOwned(DonePath(path))
	if err != nil {
		return 0
	}
	data, err := io.ReadAll(io.LimitReader(m, markMax))
	m.Close()
	if err != nil {
		return 0
	}
	rest, ok := strings.CutPrefix(strings.TrimSuffix(string(data), "\n"), markMagic+" ")
	if !ok {
		return 0
	}
	fields := strings.Fields(rest)
	if len(fields) != 3 {
		return 0
	}
	end, err1 := strconv.ParseInt(fields[0], 10, 64)
	size, err2 := strconv.ParseInt(fields[1], 10, 64)
	tail, err3 := hex.DecodeString(fields[2])
	fi, err4 := f.Stat()
	if err := errors.Join(err1, err2, err3, err4); err != nil || end <= 0 || size != fi.Size() || end > size ||
		len(tail) != int(min(end, markTail)) {
		return 0
	}
	got := make([]byte, len(tail))
	if _, err := f.ReadAt(got, end-int64(len(got))); err != nil || !bytes.Equal(got, tail) {
		return 0
	}
	return end
}

// Remaining returns how many lines of the replay file at path are after its
// mark (all of them without one): the records a replay of it would still
// send, and the lines it would set aside. Blank lines are not counted.
func Remaining(path string) (int, error) {
	f, err := safefile.OpenOwned(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if start := markOf(path, f); start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return 0, fmt.Errorf("spool %s: %w", path, err)
		}
	}
	br := bufio.NewReaderSize(f, 64<<10)
	n := 0
	text := false // the current line has a byte other than white space
	for {
		chunk, rerr := br.ReadSlice('\n')
		if rerr != nil && rerr != bufio.ErrBufferFull && rerr != io.EOF {
			return n, fmt.Errorf("spool %s: %w", path, rerr)
		}
		if !text && len(bytes.TrimSpace(chunk)) > 0 {
			text = true
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if text {
			n++
		}
		text = false
		if rerr == io.EOF {
			return n, nil
		}
	}
}

// Discard removes the replay file at path, every line of which was handled,
// and then its mark. (In the other order, a crash in between would leave the
// file without its mark: sent again in full.)
func Discard(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Remove(DonePath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// removeStaleMarks removes the marks of replay files that are gone (a crash
// between Discard's two steps, a file removed by hand). s.mu is held.
func (s *Spool) removeStaleMarks() {
	marks, err := filepath.Glob(globEscape(s.path) + ".replay.*.done")
	if err != nil {
		return
	}
	for _, m := range marks {
		if _, err := os.Lstat(strings.TrimSuffix(m, ".done")); errors.Is(err, fs.ErrNotExist) {
			os.Remove(m)
		}
	}
}
