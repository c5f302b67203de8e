// Package rig stands up Loom nodes as network namespaces on a bridge in a
// switch namespace (the underlay), runs the real loomd in each, and
// attaches pods (more namespaces) through libcni, as container runtimes
// do. The integration tests and `make demo` share it.
//
// Every name a rig creates starts with a per-run prefix that embeds the
// creating process's PID, so Sweep can remove what a killed run left
// behind without touching a live run. No address is ever added to the
// root namespace.
package rig

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loomnet/loom/api"
)

// NamePrefix starts every namespace and temp dir a rig creates.
const NamePrefix = "loomt"

// Options configure a rig.
type Options struct {
	// BinDir holds loomd, loom and loomctl.
	BinDir string
	// AgentArgs are extra loomd flags for every node.
	AgentArgs []string
	// IPv6Underlay gives the nodes IPv6 addresses on the switch
	// (Underlay6) and no IPv4 one: the tunnels run over IPv6.
	IPv6Underlay bool
	// Logf receives progress lines; nil is quiet.
	Logf func(format string, args ...any)
}

// Rig is one running test fabric.
type Rig struct {
	Prefix  string
	Dir     string
	Switch  string
	KeyFile string
	opts    Options

	// underlay is the switch's subnet: Underlay or Underlay6.
	underlay netip.Prefix

	// mu guards nodes and nextAddr.
	mu       sync.Mutex
	nodes    []*Node
	nextAddr int
	// routed is set once AddRoutedNode built the second segment; nodes
	// added afterwards on the switch get a route to it.
	routed bool
}

// Node is one Loom node: a namespace on the switch running loomd.
type Node struct {
	Name   string
	NS     string
	Addr   netip.Addr
	Dir    string
	Socket string
	// ConfDir is the node's --cni-conf-dir.
	ConfDir string
	// CNIBin is the node's CNI path; CNIClient runs its plugins in the
	// node's namespace.
	CNIBin string
	// Args are the node's extra loomd flags.
	Args []string
	port string

	// mu guards cmd.
	mu  sync.Mutex
	cmd *exec.Cmd
	rig *Rig
}

// Underlay is the switch's subnet; each rig has its own switch namespace,
// so rigs never see each other's addresses.
var Underlay = netip.MustParsePrefix("10.200.0.0/24")

// Underlay6 is the switch's subnet in a rig with Options.IPv6Underlay (a
// unique local prefix, never routed off the rig).
var Underlay6 = netip.MustParsePrefix("fd00:200::/64")

// Run runs a command and returns its combined output, with the command in
// the error.
func Run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func ipn(ns string, args ...string) error {
	_, err := Run("ip", append([]string{"-n", ns}, args...)...)
	return err
}

// SetKnob writes value to a kernel file (/proc/sys, /sys) as namespace ns
// sees it: ip netns exec mounts the namespace's own sysfs, which the
// per-device files under /sys/class/net need.
func SetKnob(ns, path, value string) error {
	_, err := Run("ip", "netns", "exec", ns, "sh", "-c", "echo "+value+" > "+path)
	return err
}

// New creates the switch namespace with its bridge.
func New(opts Options) (*Rig, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	bin, err := filepath.Abs(opts.BinDir)
	if err != nil {
		return nil, err
	}
	opts.BinDir = bin
	Sweep(opts.Logf)
	var rnd [2]byte
	rand.Read(rnd[:])
	prefix := fmt.Sprintf("%s%d-%s", NamePrefix, os.Getpid(), hex.EncodeToString(rnd[:]))
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		return nil, err
	}
	r := &Rig{Prefix: prefix, Dir: dir, Switch: prefix + "-sw", opts: opts, nextAddr: 1, underlay: Underlay}
	if opts.IPv6Underlay {
		r.underlay = Underlay6
	}
	if _, err := Run("ip", "netns", "add", r.Switch); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"link", "set", "br0", "up"},
	} {
		if err := ipn(r.Switch, args...); err != nil {
			r.Close()
			return nil, err
		}
	}
	key := make([]byte, 32)
	rand.Read(key)
	r.KeyFile = filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(r.KeyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Nodes returns the rig's nodes in creation order.
func (r *Rig) Nodes() []*Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Node(nil), r.nodes...)
}

// AddNode creates a node namespace wired to the switch. It does not start
// the agent, so without Start it is an "outside" host on the underlay.
func (r *Rig) AddNode(name string, args ...string) (*Node, error) {
	idx, addr := r.nextUnderlayAddr()
	n := &Node{
		Name: name, NS: fmt.Sprintf("%s-n%d", r.Prefix, idx), Addr: addr,
		Dir: filepath.Join(r.Dir, name), Args: args, rig: r, port: fmt.Sprintf("p%d", idx),
	}
	n.Socket = filepath.Join(n.Dir, "loom.sock")
	n.ConfDir = filepath.Join(n.Dir, "net.d")
	n.CNIBin = filepath.Join(n.Dir, "cni-bin")
	if err := os.MkdirAll(n.CNIBin, 0o755); err != nil {
		return nil, err
	}
	if err := n.InstallPlugin("loom", filepath.Join(r.opts.BinDir, "loom")); err != nil {
		return nil, err
	}
	if _, err := Run("ip", "netns", "add", n.NS); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.nodes = append(r.nodes, n)
	r.mu.Unlock()
	steps := append(r.plugSteps(n), []string{n.NS, "link", "set", "lo", "up"})
	if r.routed {
		steps = append(steps, append([]string{n.NS}, r.routeToRoutedSegment()...))
	}
	if err := runSteps(steps); err != nil {
		return nil, err
	}
	return n, nil
}

// plugSteps wire n's eth0 to the switch with its address: a veth pair
// whose other end is n's port on the switch's bridge. Each step is a
// namespace and the ip arguments to run there.
func (r *Rig) plugSteps(n *Node) [][]string {
	return [][]string{
		{r.Switch, "link", "add", n.port, "type", "veth", "peer", "name", "eth0", "netns", n.NS},
		{r.Switch, "link", "set", n.port, "master", "br0", "up"},
		r.addrStep(n.NS, "add", n.Addr),
		{n.NS, "link", "set", "eth0", "up"},
	}
}

// addrStep adds ("add") or deletes ("del") a node's underlay address on
// its eth0. An IPv6 one skips duplicate address detection: the rig hands
// out unique addresses, and a tentative one could not be sent from yet.
func (r *Rig) addrStep(ns, op string, a netip.Addr) []string {
	p := netip.PrefixFrom(a, r.underlay.Bits())
	if op == "add" {
		return addrAddStep(ns, "eth0", p)
	}
	return []string{ns, "addr", op, p.String(), "dev", "eth0"}
}

// addrAddStep adds address p to device dev in namespace ns, an IPv6 one
// without duplicate address detection (see addrStep).
func addrAddStep(ns, dev string, p netip.Prefix) []string {
	step := []string{ns, "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		step = append(step, "nodad")
	}
	return step
}

// runSteps runs ip steps (a namespace, then the arguments) in order.
func runSteps(steps [][]string) error {
	for _, s := range steps {
		if err := ipn(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// nextUnderlayAddr hands out the next unused address on the switch, with
// its index (which also names the node's namespace and switch port).
func (r *Rig) nextUnderlayAddr() (int, netip.Addr) {
	r.mu.Lock()
	idx := r.nextAddr
	r.nextAddr++
	r.mu.Unlock()
	return idx, withLastByte(r.underlay, byte(idx))
}

// Readdress moves a node on the switch to a new underlay address, as a
// changed DHCP lease or a reinstalled host would, and returns the old one.
// The agent is not told: stop it first, or see how it copes.
func (r *Rig) Readdress(n *Node) (netip.Addr, error) {
	_, addr := r.nextUnderlayAddr()
	old := n.Addr
	// The old address goes first: deleting a primary address takes the
	// secondaries of its subnet with it.
	if err := runSteps([][]string{r.addrStep(n.NS, "del", old), r.addrStep(n.NS, "add", addr)}); err != nil {
		return old, err
	}
	n.Addr = addr
	return old, nil
}

// Replug deletes the node's underlay interface and creates it anew with
// the same address, as a network restart that rebuilds a bond or a VLAN
// does: the interface comes back under a new index.
func (r *Rig) Replug(n *Node) error {
	return runSteps(append([][]string{{r.Switch, "link", "del", n.port}}, r.plugSteps(n)...))
}

// InstallPlugin puts a CNI plugin into the node's CNI path (a link to
// binary). CNIClient runs the plugins there in the node's namespace.
func (n *Node) InstallPlugin(name, binary string) error {
	abs, err := filepath.Abs(binary)
	if err != nil {
		return err
	}
	return os.Symlink(abs, filepath.Join(n.CNIBin, name))
}

// AgentArgs returns the loomd command line for n, joining join (if any).
func (n *Node) agentArgs(join []*Node) []string {
	args := []string{
		"--node-name", n.Name, "--iface", "eth0",
		"--gossip-key-file", n.rig.KeyFile,
		"--state-dir", filepath.Join(n.Dir, "state"),
		"--socket", n.Socket, "--cni-conf-dir", n.ConfDir,
		"--log-level", "debug",
	}
	var js []string
	for _, j := range join {
		js = append(js, j.Addr.String())
	}
	if len(js) > 0 {
		args = append(args, "--join", strings.Join(js, ","))
	}
	args = append(args, n.rig.opts.AgentArgs...)
	return append(args, n.Args...)
}

// SwitchPort is the name of the node's port on the underlay switch.
func (n *Node) SwitchPort() string { return n.port }

// LogPath is where the node's agent logs go.
func (n *Node) LogPath() string { return filepath.Join(n.Dir, "loomd.log") }

// Start runs loomd in the node's namespace, joining the given nodes.
func (n *Node) Start(join ...*Node) error { return n.StartWith(nil, join...) }

// StartWith is Start with the command line passed through edit first (nil
// keeps it).
func (n *Node) StartWith(edit func([]string) []string, join ...*Node) error {
	return n.start(edit, nil, join)
}

// StartAfterReboot starts the agent as on a node that has rebooted: it
// reads bootID as the kernel's boot ID, bind-mounted over the real one in
// a mount namespace of its own (the rig's nodes share one kernel).
func (n *Node) StartAfterReboot(bootID string, join ...*Node) error {
	file := filepath.Join(n.Dir, "boot_id")
	if err := os.WriteFile(file, []byte(bootID+"\n"), 0o644); err != nil {
		return err
	}
	return n.start(nil, []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"`, file}, join)
}

// start runs loomd in the node's namespace, its command line passed
// through edit, behind the commands of wrap (each execs the next).
func (n *Node) start(edit func([]string) []string, wrap []string, join []*Node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("node %s: agent already running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := n.agentArgs(join)
	if edit != nil {
		args = edit(args)
	}
	argv := append([]string{"--net=/run/netns/" + n.NS, "--"}, wrap...)
	argv = append(append(argv, filepath.Join(n.rig.opts.BinDir, "loomd")), args...)
	cmd := exec.Command("nsenter", argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal to the test's group (Ctrl-C) reaches
	// the rig's cleanup, which stops agents in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start loomd on %s: %w", n.Name, err)
	}
	n.cmd = cmd
	n.rig.opts.Logf("started loomd on %s (%s, pid %d)", n.Name, n.Addr, cmd.Process.Pid)
	return nil
}

// Stop signals the agent and waits for it to exit (SIGKILL after 10 s).
func (n *Node) Stop(sig syscall.Signal) error {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	reap(cmd, 10*time.Second)
	return nil
}

// reap waits up to timeout for cmd to exit, kills it after that, and
// reports whether it exited by itself.
func reap(cmd *exec.Cmd, timeout time.Duration) bool {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return false
	}
}

// WaitExit waits up to timeout for the agent to exit by itself (killing it
// after that) and returns its exit status. Afterwards the node counts as
// stopped.
func (n *Node) WaitExit(timeout time.Duration) (int, error) {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("node %s: agent not running", n.Name)
	}
	if !reap(cmd, timeout) {
		return 0, fmt.Errorf("node %s: agent still running after %s (killed)", n.Name, timeout)
	}
	return cmd.ProcessState.ExitCode(), nil
}

// Pid is the agent's process ID (nsenter execs loomd), 0 when stopped.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's agent was started and not stopped.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Client returns an API client for the node's agent.
func (n *Node) Client() *api.Client { return api.NewClient(n.Socket, 5*time.Second) }

// Status asks the node's agent for its status.
func (n *Node) Status() (api.Status, error) {
	return n.Client().Status(context.Background())
}

// Exec runs a command inside the node's namespace.
func (n *Node) Exec(name string, args ...string) (string, error) {
	return Run("nsenter", append([]string{"--net=/run/netns/" + n.NS, "--", name}, args...)...)
}

// WaitReady waits until the agent reports ready and has written its
// conflist.
func (n *Node) WaitReady(timeout time.Duration) error {
	return Eventually(timeout, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		if !st.Node.Ready {
			return fmt.Errorf("node %s not ready: %s", n.Name, strings.Join(st.Node.NotReady, "; "))
		}
		if _, err := os.Stat(filepath.Join(n.ConfDir, "10-loom.conflist")); err != nil {
			return fmt.Errorf("node %s: no conflist yet: %w", n.Name, err)
		}
		return nil
	})
}

// Eventually retries f until it succeeds or timeout passes, returning the
// last error.
func Eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// Close stops every agent and removes every namespace and file of the rig.
func (r *Rig) Close() error {
	var errs []error
	for _, n := range r.Nodes() {
		n.Stop(syscall.SIGTERM)
	}
	for _, ns := range r.namespaces() {
		if err := removeNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.RemoveAll(r.Dir))
	return errors.Join(errs...)
}

// namespaces lists every namespace whose name carries the rig's prefix.
func (r *Rig) namespaces() []string {
	var out []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), r.Prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}
