package omqs

import "testing"

func TestConfigOrigin(t *testing.T) {
	c := cfgMustParse(t, `[DEFAULT]
exchange_durable = no

[Global]
; a comment
reconnect_times = 3
MQURL = amqp://u:p@h:5672/%(vhost)s
vhost = v

[SyncPublisher]
ROUTING_KEYS = a, b

[LogWorker]
EXCHANGE = logs
`)
	tests := []struct {
		section, key, want string
	}{
		{"Global", "RECONNECT_TIMES", "test.cfg:6"},
		{"global", "reconnect_times", "test.cfg:6"}, // any case
		{"Global", "MQURL", "test.cfg:7"},
		{"Global", "BUFFER_SIZE", ""}, // default
		{"SyncPublisher", "ROUTING_KEY", "test.cfg:11"},
		{"LogWorker", "EXCHANGE", "test.cfg:14"},
		{"LogWorker", "EXCHANGE_DURABLE", "test.cfg:2"}, // from [DEFAULT]
		{"EventWorker", "EXCHANGE_DURABLE", "test.cfg:2"},
		{"EventWorker", "EXCHANGE", ""},
		{"Global", "VHOST", ""}, // not a setting
		{"Nope", "MQURL", ""},
	}
	for _, tt := range tests {
		if got := c.Origin(tt.section, tt.key); got != tt.want {
			t.Errorf("Origin(%q, %q) = %q, want %q", tt.section, tt.key, got, tt.want)
		}
	}
	if got := DefaultConfig().Origin("Global", "MQURL"); got != "" {
		t.Errorf("DefaultConfig: Origin = %q, want \"\"", got)
	}
	var nilCfg *Config
	if got := nilCfg.Origin("Global", "MQURL"); got != "" {
		t.Errorf("nil Config: Origin = %q", got)
	}
	// A copy made by an option keeps the origins.
	if got := c.clone().Origin("Global", "MQURL"); got != "test.cfg:7" {
		t.Errorf("clone: Origin = %q", got)
	}
}
