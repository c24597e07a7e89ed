// Package clustertest starts a RabbitMQ cluster of three extra nodes on this
// machine for the fault suite's cluster test, and stops and removes it when
// the test ends.
//
// The nodes are omqs1@localhost, omqs2@localhost and omqs3@localhost, on
// AMQP ports 5681-5683 and distribution ports 25681-25683, each with its own
// configuration, plugins file (empty: no management plugin), database and
// logs under Base. They are started with `rabbitmq-server -detached`, which,
// run as root, runs the node as the rabbitmq user, as rabbitmqctl does: so
// the nodes and the command line share the Erlang cookie of the machine's
// default node (/var/lib/rabbitmq/.erlang.cookie). The default node
// (rabbit@HOST on 5672) is never touched: it is not part of the cluster.
//
// Environment:
//
//	OMQS_CLUSTER_TESTS=1   run the cluster test (with OMQS_FAULT_TESTS=1)
//
// A run that crashed leaves nodes running: Start stops them first, and
// .ci/run stops them and removes Base before the tests.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/faulttest"
)

// Size is the number of nodes.
const Size = 3

// FirstPort is the AMQP port of the first node; node i (from 1) listens on
// FirstPort+i-1 and on FirstPort+i-1+DistOffset for Erlang distribution.
const (
	FirstPort  = 5681
	DistOffset = 20000
)

// Base is the directory holding the nodes' files.
func Base() string { return filepath.Join(os.TempDir(), "omqs-cluster") }

// Enabled reports whether OMQS_CLUSTER_TESTS=1 is set.
func Enabled() bool { return os.Getenv("OMQS_CLUSTER_TESTS") == "1" }

// Require skips t unless cluster tests were asked for.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skip("cluster test: it starts three extra RabbitMQ nodes (about a minute, 150 MB each); run it with OMQS_FAULT_TESTS=1 OMQS_CLUSTER_TESTS=1 go test -run Cluster -p 1 ./internal/faulttest/")
	}
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		t.Skip("cluster test: rabbitmq-server is not installed")
	}
}

// Node is one node of the cluster.
type Node struct {
	Name string // omqsN@localhost
	Port int    // AMQP port
	Dir  string // its files
}

// URL is the node's AMQP address.
func (n Node) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.Port) }

// Cluster is the running cluster.
type Cluster struct {
	Nodes []Node
}

// Nodes returns the nodes' descriptions, started or not.
func nodes() []Node {
	ns := make([]Node, Size)
	for i := range ns {
		name := fmt.Sprintf("omqs%d", i+1)
		ns[i] = Node{Name: name + "@localhost", Port: FirstPort + i, Dir: filepath.Join(Base(), name)}
	}
	return ns
}

// Ctl runs rabbitmqctl against node with args.
func Ctl(ctx context.Context, node string, args ...string) (string, error) {
	full := append([]string{"-n", node}, args...)
	out, err := exec.CommandContext(ctx, "rabbitmqctl", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func ctl(t testing.TB, node string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := Ctl(ctx, node, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Start starts the three nodes, joins the second and third to the first,
// and registers a cleanup that stops them and removes their files.
func Start(t testing.TB) *Cluster {
	t.Helper()
	Cleanup() // what a crashed run left
	c := &Cluster{Nodes: nodes()}
	t.Cleanup(func() {
		if err := Cleanup(); err != nil {
			t.Errorf("clustertest: %v", err)
		}
	})
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		// rabbitmq-server runs the node as the rabbitmq user.
		u, err := user.Lookup("rabbitmq")
		if err != nil {
			t.Fatalf("clustertest: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		if err := prepare(n, uid, gid); err != nil {
			t.Fatalf("clustertest: %s: %v", n.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = start(n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	for _, n := range c.Nodes[1:] {
		ctl(t, n.Name, "-q", "stop_app")
		ctl(t, n.Name, "-q", "join_cluster", c.Nodes[0].Name)
		ctl(t, n.Name, "-q", "start_app")
	}
	for _, n := range c.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := WaitReady(ctx, n.URL())
		cancel()
		if err != nil {
			t.Fatalf("clustertest: %s: %v", n.Name, err)
		}
	}
	out := ctl(t, c.Nodes[0].Name, "-q", "cluster_status")
	for _, n := range c.Nodes {
		if !strings.Contains(out, n.Name) {
			t.Fatalf("clustertest: %s is not in the cluster:\n%s", n.Name, out)
		}
	}
	return c
}

func prepare(n Node, uid, gid int) error {
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"enabled_plugins": "",
		"rabbitmq.conf":   "loopback_users.guest = true\nlog.console = false\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	if uid >= 0 {
		for _, p := range []string{Base(), n.Dir, filepath.Join(n.Dir, "enabled_plugins"), filepath.Join(n.Dir, "rabbitmq.conf")} {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
		}
	}
	return nil
}

// start starts node n and waits until its AMQP port answers.
func start(n Node) error {
	cmd := exec.Command("rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.Port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.Port+DistOffset),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.Dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.Dir, "rabbitmq.conf"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.Dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.Dir, "pid"),
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: rabbitmq-server -detached: %w: %s", n.Name, err, out)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: port %d not open after 2 minutes (logs in %s)", n.Name, n.Port, filepath.Join(n.Dir, "log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := Ctl(ctx, n.Name, "-q", "await_startup", "--timeout", "110")
	return err
}

// Cleanup stops every node of the cluster that is running, whatever started
// it, and removes Base. It is what .ci/run does before the tests.
func Cleanup() error {
	var errs []error
	registered := epmdNames()
	for _, n := range nodes() {
		pid := readPID(n)
		short, _, _ := strings.Cut(n.Name, "@")
		var err error
		if registered == nil || registered[short] {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err = Ctl(ctx, n.Name, "-q", "stop")
			cancel()
		}
		if pid > 0 && alive(pid) {
			// rabbitmqctl stop returns once the node stopped; a node that
			// did not answer it is killed.
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				waitGone(pid)
			}
		}
		_ = err // a node that is not running is not an error
	}
	if err := os.RemoveAll(Base()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// epmdNames returns the names of the nodes running on this machine, as epmd
// lists them, or nil when epmd cannot be asked.
func epmdNames() map[string]bool {
	out, err := exec.Command("epmd", "-names").Output()
	if err != nil {
		return nil
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "name" {
			names[f[1]] = true
		}
	}
	return names
}

func readPID(n Node) int {
	b, err := os.ReadFile(filepath.Join(n.Dir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func waitGone(pid int) {
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// StopApp stops the application of node n (rabbitmqctl stop_app): its
// clients lose their connections, its port closes, the other nodes go on.
func (c *Cluster) StopApp(t testing.TB, n Node) {
	t.Helper()
	ctl(t, n.Name, "-q", "stop_app")
}

// StartApp starts the application of node n again and waits until it
// accepts a login.
func (c *Cluster) StartApp(t testing.TB, n Node) {
	t.Helper()
	ctl(t, n.Name, "-q", "start_app")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := WaitReady(ctx, n.URL()); err != nil {
		t.Fatalf("clustertest: %s: %v", n.Name, err)
	}
}

// Node returns the node named name.
func (c *Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodeOnPort returns the node listening on port.
func (c *Cluster) NodeOnPort(port int) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Port == port {
			return n, true
		}
	}
	return Node{}, false
}

// Leader returns the name of the node holding the leader of quorum queue
// queue, asking node via.
func (c *Cluster) Leader(t testing.TB, via Node, queue string) string {
	t.Helper()
	out := ctl(t, via.Name, "-q", "list_queues", "--no-table-headers", "name", "leader")
	for _, line := range strings.Split(out, "\n") {
		name, leader, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok && name == queue {
			return strings.TrimSpace(leader)
		}
	}
	t.Fatalf("clustertest: queue %s not listed by %s:\n%s", queue, via.Name, out)
	return ""
}

var connNameRe = regexp.MustCompile(`\{"connection_name","((?:[^"\\]|\\.)*)"\}`)

// Connections returns, for each client connection of the cluster that has a
// connection name, the node it is on (asking node via).
func (c *Cluster) Connections(t testing.TB, via Node) map[string]string {
	t.Helper()
	out := ctl(t, via.Name, "-q", "list_connections", "--no-table-headers", "port", "client_properties")
	conns := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		p, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			continue
		}
		m := connNameRe.FindStringSubmatch(props)
		n, found := c.NodeOnPort(port)
		if m == nil || !found {
			continue
		}
		conns[m[1]] = n.Name
	}
	return conns
}

// WaitReady waits until the node at url accepts an AMQP login and opens a
// channel, or ctx ends.
func WaitReady(ctx context.Context, url string) error { return faulttest.WaitReady(ctx, url) }
