package journal

import "errors"

var (
	// ErrFull is returned by Append when the entry would take the journal
	// past Options.MaxBytes of unconfirmed entries, or when no segment file
	// can be created (the disk is full). Nothing was written.
	ErrFull = errors.New("journal: full")
	// ErrClosed is returned by Append after Seal or Close.
	ErrClosed = errors.New("journal: closed")
	// ErrLocked is returned by Open when another process (or another Open
	// in this one) holds the directory; the message names the directory and
	// the holder's process id.
	ErrLocked = errors.New("journal: directory locked")
	// ErrTooLarge is returned by Append for a key or id longer than 255
	// bytes, or an entry larger than a segment.
	ErrTooLarge = errors.New("journal: entry too large")
	// ErrInvalidOptions is returned by Open for options it cannot use.
	ErrInvalidOptions = errors.New("journal: invalid options")
	// ErrCorrupt is returned by Open when CHECKPOINT is not a journal's.
	ErrCorrupt = errors.New("journal: corrupt")
)
