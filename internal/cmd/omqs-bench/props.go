package main

import (
	"context"
	"fmt"
	"time"

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
		{"id + timestamp (what OMQS sends to its own queue)", benchkit.AsOMQS},
		{"id + timestamp + mandatory (OMQS to another queue)", benchkit.Props{Mandatory: true, MessageID: true, Timestamp: true}},
		{"all five", benchkit.AllProps},
	}
	rates := make([][]float64, len(variants))
	brokerUS := make([][]float64, len(variants)) // the broker's CPU µs per message
	pid := brokerPID()
	for r := 0; r < *rounds; r++ {
		for i := range variants {
			// Rotate the order each round so no variant always goes first.
			k := (i + r) % len(variants)
			c0 := procCPU(pid)
			d, err := benchkit.RawPublishProps(*url, t, *n, omqs.DefaultMaxInFlight, variants[k].props)
			if err != nil {
				return err
			}
			brokerUS[k] = append(brokerUS[k], float64(procCPU(pid)-c0)/float64(time.Microsecond)/float64(*n))
			if err := benchkit.Purge(*url, t); err != nil {
				return err
			}
			rates[k] = append(rates[k], float64(*n)/d.Seconds())
		}
	}
	plain := benchkit.Median(rates[0])
	for i, v := range variants {
		m := benchkit.Median(rates[i])
		cpu := "broker CPU not measured (not on this machine)"
		if pid != 0 {
			cpu = fmt.Sprintf("broker CPU %.1f µs/msg", benchkit.Median(brokerUS[i]))
		}
		results = append(results, row{"raw, confirmed msgs/s: " + v.name, "", fmt.Sprintf("%.0f", m), fmt.Sprintf("%.2f", m/plain), cpu, ""})
	}
	return nil
}
