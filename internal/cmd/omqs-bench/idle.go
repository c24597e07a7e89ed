package main

import (
	"context"
	"flag"
	"fmt"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/benchkit"
)

var idleFor = flag.Duration("idle", 20*time.Second, "how long each idle-cost measurement lasts")

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCost returns the process's CPU time per second of wall time over d.
func idleCost(d time.Duration) float64 {
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(d)
	return float64(cpuTime()-c0) / float64(time.Millisecond) / time.Since(t0).Seconds()
}

// idle compares a started Manager with nothing to send against what a user
// would hold instead: two idle amqp091-go connections with a confirm channel
// each (one per lane).
func idle(ctx context.Context) error {
	t := topo()
	defer cleanup(t)
	m, err := manager(ctx, *url, t, 16384)
	if err != nil {
		return err
	}
	if err := m.SendEvent(benchkit.Body, ""); err != nil {
		return err
	}
	time.Sleep(time.Second) // let the send settle: the cost measured is that of waiting
	omqsCost := idleCost(*idleFor)
	if err := m.Stop(ctx); err != nil {
		return err
	}

	var conns []*amqp.Connection
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2 {
		c, err := amqp.Dial(*url)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return err
		}
	}
	rawCost := idleCost(*idleFor)
	const target = 0.5
	results = append(results, row{
		measure: fmt.Sprintf("idle CPU, ms per s (getrusage over %v)", *idleFor),
		omqs:    fmt.Sprintf("%.2f", omqsCost), raw: fmt.Sprintf("%.2f", rawCost),
		ratio: "-", target: fmt.Sprintf("≤ %.1f", target), verdict: verdict(omqsCost <= target),
	})
	return nil
}
