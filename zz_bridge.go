package omqs

// Temporary definitions until the config and logging branches merge.


func resolveConfig() (*Config, error)         { return DefaultConfig(), nil }
func LoadConfig(path string) (*Config, error) { return DefaultConfig(), nil }
func (c *Config) Validate() error             { return nil }

// clone returns a deep copy of c. (moves to config.go)
func (c *Config) clone() *Config {
	n := *c
	cp := func(s []string) []string { return append([]string(nil), s...) }
	for _, p := range []*PublisherConfig{&n.AsyncPublisher, &n.SyncPublisher, &n.AsyncBroadcaster, &n.SyncBroadcaster, &n.AsyncRouter, &n.SyncRouter} {
		p.RoutingKeys = cp(p.RoutingKeys)
	}
	n.LogWorker.Keys = cp(n.LogWorker.Keys)
	n.EventWorker.Keys = cp(n.EventWorker.Keys)
	n.LogConsumer.Keys = cp(n.LogConsumer.Keys)
	n.EventConsumer.Keys = cp(n.EventConsumer.Keys)
	n.Warnings = cp(n.Warnings)
	return &n
}
