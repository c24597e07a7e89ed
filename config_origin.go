package omqs

import "github.com/omqs-go/omqs/internal/pyini"

// Origin returns where LoadConfig read the setting key of section (both in
// any case, as OMQS.cfg names them: Origin("Global", "MQURL")), as
// "FILE:LINE"; the line is that of the key in the section, or in [DEFAULT]
// when the section left it out. It returns "" for a setting the file did
// not set (it has its default), and for every setting of a Config that
// LoadConfig did not read, such as DefaultConfig's. A value set through
// ROUTING_KEYS is found under ROUTING_KEY.
//
// Origin tells what the file said: it does not follow changes made to the
// Config's fields afterwards, nor options passed to a constructor.
func (c *Config) Origin(section, key string) string {
	if c == nil {
		return ""
	}
	return c.origins[cfgOriginKey(section, key)]
}

func cfgOriginKey(section, key string) string {
	return pyini.Fold(section) + "." + pyini.Fold(key)
}
