//go:build linux

package journal

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs a child process's part when the test binary is re-executed
// by a test (see child_test.go), and otherwise fails the package's tests if
// a goroutine is still running after them.
func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m)
}
