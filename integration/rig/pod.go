package rig

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/loomnet/loom/internal/icmpecho"
)

// Pod is a network namespace attached to a node through libcni.
type Pod struct {
	Name        string
	NS          string
	Node        *Node
	ContainerID string
	IP          netip.Addr
	Result      *current.Result
	// Args are the CNI_ARGS the runtime passes (e.g. K8S_POD_NAMESPACE).
	Args [][2]string
}

var podSeq atomic.Int64

// CNI returns the libcni client and the conflist the node's agent wrote,
// exactly what a container runtime on the node would load.
func (n *Node) CNI() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	list, err := libcni.ConfListFromFile(filepath.Join(n.ConfDir, "10-loom.conflist"))
	if err != nil {
		return nil, nil, fmt.Errorf("load conflist of %s: %w", n.Name, err)
	}
	return n.CNIClient("cni-cache"), list, nil
}

// RuntimeConf is the libcni runtime configuration for the pod.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: "/run/netns/" + p.NS, IfName: "eth0", Args: p.Args}
}

// NewPodNS creates the pod's namespace without attaching it.
func (n *Node) NewPodNS(name string) (*Pod, error) {
	seq := podSeq.Add(1)
	p := &Pod{
		Name: name, Node: n,
		NS:          fmt.Sprintf("%s-p%d", n.rig.Prefix, seq),
		ContainerID: fmt.Sprintf("%s-%s-%d", n.rig.Prefix, name, seq),
	}
	if _, err := Run("ip", "netns", "add", p.NS); err != nil {
		return nil, err
	}
	return p, nil
}

// AddPod creates a pod namespace on n and attaches it with libcni ADD.
func (n *Node) AddPod(ctx context.Context, name string) (*Pod, error) {
	return n.AddPodWithArgs(ctx, name, nil)
}

// AddPodWithArgs is AddPod with CNI_ARGS, as kubelet passes them.
func (n *Node) AddPodWithArgs(ctx context.Context, name string, args [][2]string) (*Pod, error) {
	p, err := n.NewPodNS(name)
	if err != nil {
		return nil, err
	}
	p.Args = args
	if err := p.Add(ctx); err != nil {
		removeNetns(p.NS)
		return nil, err
	}
	return p, nil
}

// Add runs CNI ADD for the pod.
func (p *Pod) Add(ctx context.Context) error {
	cni, list, err := p.Node.CNI()
	if err != nil {
		return err
	}
	res, err := cni.AddNetworkList(ctx, list, p.RuntimeConf())
	if err != nil {
		return fmt.Errorf("CNI ADD %s on %s: %w", p.Name, p.Node.Name, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return err
	}
	if len(cur.IPs) != 1 {
		return fmt.Errorf("CNI ADD %s: want 1 IP, got %d", p.Name, len(cur.IPs))
	}
	ip, _ := netip.AddrFromSlice(cur.IPs[0].Address.IP.To4())
	p.IP, p.Result = ip, cur
	return nil
}

// Check runs CNI CHECK for the pod.
func (p *Pod) Check(ctx context.Context) error {
	cni, list, err := p.Node.CNI()
	if err != nil {
		return err
	}
	return cni.CheckNetworkList(ctx, list, p.RuntimeConf())
}

// Del runs CNI DEL for the pod and removes its namespace.
func (p *Pod) Del(ctx context.Context) error {
	cni, list, err := p.Node.CNI()
	if err != nil {
		return err
	}
	if err := cni.DelNetworkList(ctx, list, p.RuntimeConf()); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", p.Name, err)
	}
	return removeNetns(p.NS)
}

// Exec runs a command inside the pod's namespace.
func (p *Pod) Exec(name string, args ...string) (string, error) {
	return Run("nsenter", append([]string{"--net=/run/netns/" + p.NS, "--", name}, args...)...)
}

// Ping sends one echo request from namespace ns to dst and waits 1 s.
func Ping(ns string, dst netip.Addr) error { return PingWithin(ns, dst, time.Second) }

// PingWithin sends one echo request and waits at most timeout for the
// reply; measurements use a short one so a miss costs little. It pings
// from a socket of its own rather than by starting ping, so that tests
// and benchmarks that poll many namespaces at once do not load the two
// cores the agents share with them.
func PingWithin(ns string, dst netip.Addr, timeout time.Duration) error {
	p, err := icmpecho.Open("/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Ping(dst, timeout); err != nil {
		return fmt.Errorf("from %s: %w", ns, err)
	}
	return nil
}

// PairResult is the outcome of one ordered pod pair.
type PairResult struct {
	From, To *Pod
	Err      error
}

// PingAll pings every ordered pair of distinct pods once.
func PingAll(pods []*Pod) []PairResult {
	var out []PairResult
	for _, a := range pods {
		for _, b := range pods {
			if a == b {
				continue
			}
			out = append(out, PairResult{From: a, To: b, Err: Ping(a.NS, b.IP)})
		}
	}
	return out
}

// Tail returns the last n lines of a file (for failure reports).
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
