package main

import (
	"context"
	"fmt"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/benchkit"
)

// propsCost measures what each property and mandatory cost the broker: raw
// amqp091-go, confirmed and pipelined, plain and with one property at a
// time, the variants interleaved in each round.
func propsCost(ctx context.Context) error {
	t := topo()
	if err := benchkit.Declare(*url, t); err != nil {
		return err
	}
	defer cleanup(t)
	variants := []struct {
		name  string
		props benchkit.Props
	}{
		{"plain (persistent body only)", benchkit.Plain},
		{"+ mandatory", benchkit.Props{Mandatory: true}},
		{"+ message id", benchkit.Props{MessageID: true}},
		{"+ app id", benchkit.Props{AppID: true}},
		{"+ timestamp", benchkit.Props{Timestamp: true}},
		{"+ content type", benchkit.Props{ContentType: true}},
		{"all of OMQS's", benchkit.AsOMQS},
	}
	rates := make([][]float64, len(variants))
	for r := 0; r < *rounds; r++ {
		for i := range variants {
			// Rotate the order each round so no variant always goes first.
			k := (i + r) % len(variants)
			d, err := benchkit.RawPublishProps(*url, t, *n, omqs.DefaultMaxInFlight, variants[k].props)
			if err != nil {
				return err
			}
			if err := benchkit.Purge(*url, t); err != nil {
				return err
			}
			rates[k] = append(rates[k], float64(*n)/d.Seconds())
		}
	}
	plain := benchkit.Median(rates[0])
	for i, v := range variants {
		m := benchkit.Median(rates[i])
		results = append(results, row{"raw, confirmed msgs/s: " + v.name, "", fmt.Sprintf("%.0f", m), fmt.Sprintf("%.2f", m/plain), "", ""})
	}
	return nil
}
