package transport

import "strings"

// Redact hides the password of every URL in s. It returns s itself when
// no "://" is followed by an '@' (the common case, checked without
// allocating). Otherwise, after each "://", the user information is taken to
// end at the last '@' before the next "://" (or the end of s), and what
// follows its first ':' becomes "xxxxx"; when no scheme precedes the "://"
// (as in "amqp://user://pass@host"), the ':' of "://" counts as the first.
// This hides more than the password when an '@' follows the URL in the text,
// never less, even when the password is not escaped as a URL requires; the
// exceptions are passwords that hold "://", or begin with "//" after a user
// name that holds a space or punctuation.
func Redact(s string) string {
	i := strings.Index(s, "://")
	if i < 0 || strings.IndexByte(s[i+3:], '@') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	done := 0 // s[:done] is written to b
	for pos := 0; ; {
		i := strings.Index(s[pos:], "://")
		if i < 0 {
			break
		}
		i += pos
		pos = i + 3
		seg := s[pos:]
		if j := strings.Index(seg, "://"); j >= 0 {
			seg = seg[:j]
		}
		at := strings.LastIndexByte(seg, '@')
		if at < 0 {
			continue
		}
		var keep int // end of the text kept before "xxxxx"
		if !endsWithScheme(s[:i]) {
			// No scheme before this "://": its ':' may end a user name,
			// and the password begin with "//".
			keep = i + 1
		} else if colon := strings.IndexByte(seg[:at], ':'); colon >= 0 {
			keep = pos + colon + 1
		} else {
			continue // a user name without a password
		}
		b.WriteString(s[done:keep])
		b.WriteString("xxxxx")
		done = pos + at
		pos = done
	}
	b.WriteString(s[done:])
	return b.String()
}

// endsWithScheme reports whether text ends with a URL scheme (a letter, then
// letters, digits, '+', '-' or '.') that starts text or follows a character
// that cannot precede a scheme inside a URL's user information.
func endsWithScheme(text string) bool {
	k := len(text)
	for k > 0 && isSchemeChar(text[k-1]) {
		k--
	}
	if k == len(text) || !('a' <= text[k]|0x20 && text[k]|0x20 <= 'z') {
		return false
	}
	return k == 0 || !strings.ContainsRune(":/@%", rune(text[k-1]))
}

func isSchemeChar(c byte) bool {
	return 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}
