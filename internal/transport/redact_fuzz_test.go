package transport

import (
	"strings"
	"testing"
)

// FuzzRedact checks that the password of a URL embedded in any text is
// hidden, within the limits Redact documents.
func FuzzRedact(f *testing.F) {
	f.Add("dialing ", "guest", "S3cr3t!", "localhost:5672/%2F", " failed")
	f.Add("", "u", "p@ss w0rd", "h", "")
	f.Add("see http://x:y@z/ and ", "user@corp", "pw:with:colons", "h1,amqp://v:q@h2", ", mail bob@example.com")
	f.Add("amqp://user@h0/ ", "", "π∑", "[::1]:5672", "://@")
	// Passwords that begin with "//", found by fuzzing.
	f.Add("0", "", "//8", "0", "0")
	f.Add("0", "A", "//1", "0", "0")
	f.Add("0", "0", "//1:", "0", "0")
	f.Fuzz(func(t *testing.T, prefix, user, pw, host, suffix string) {
		out := Redact(prefix + "amqp://" + user + ":" + pw + "@" + host + suffix)
		if strings.Contains(pw, "://") {
			return
		}
		if strings.HasPrefix(pw, "//") && strings.IndexFunc(user, func(r rune) bool {
			return !(r < 0x80 && (isSchemeChar(byte(r)) || strings.ContainsRune(":/@%", r)))
		}) >= 0 {
			return
		}
		// A byte found only in the password must not be printed.
		others := prefix + user + host + suffix + "amqp://:xxxxx@"
		for i := 0; i < len(pw); i++ {
			if c := pw[i]; strings.IndexByte(others, c) < 0 {
				if strings.IndexByte(out, c) >= 0 {
					t.Fatalf("password %q shows in %q", pw, out)
				}
				return
			}
		}
	})
}
