package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netns"
)

// probe is one kind of connection the truth table checks.
type probe struct {
	proto string // tcp or udp
	port  int
}

func (p probe) String() string { return fmt.Sprintf("%s/%d", p.proto, p.port) }

var (
	tcp80 = probe{"tcp", 80}
	tcp81 = probe{"tcp", 81}
	udp80 = probe{"udp", 80}
	udp53 = probe{"udp", 53}
)

// netpolPod is one pod of the x/y/z × a/b/c grid.
type netpolPod struct {
	ns, name string
	pod      *rig.Pod
}

func (p *netpolPod) id() string { return p.ns + "/" + p.name }

// policyCase is one row of the truth table: the files every node's policy
// directory holds, and which (from, to) pairs must connect.
type policyCase struct {
	name   string
	files  map[string]string
	probes []probe
	// relabel, if set, runs before the files are written.
	relabel func(t *testing.T)
	allow   func(from, to *netpolPod, p probe) bool
}

const netpolNamespaces = `apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Namespace
metadata: {name: z, labels: {ns: z}}
`

func netpol(name, ns, spec string) string {
	return fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, ns, spec)
}

// policyDir is the --policy-dir that startPolicyNodes gives the node
// named name.
func policyDir(r *rig.Rig, name string) string { return filepath.Join(r.Dir, name, "policies") }

// startPolicyNodes adds count nodes whose agents enforce the policy files
// in a --policy-dir of their own (files, the same on each; nil writes
// none), each joined to those before it, and waits until each is ready.
func startPolicyNodes(t *testing.T, r *rig.Rig, count int, files map[string]string, args ...string) []*rig.Node {
	t.Helper()
	var nodes []*rig.Node
	for range count {
		name := fmt.Sprintf("node%d", len(r.Nodes())+1)
		dir := policyDir(r, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if files != nil {
			writePolicyDir(t, dir, files)
		}
		n, err := r.AddNode(name, append([]string{"--policy-dir", dir}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		startReady(t, n, nodes...)
		nodes = append(nodes, n)
	}
	return nodes
}

// dbAdmitsWeb is a policy file set: pods labelled app=db admit only pods
// labelled app=web.
func dbAdmitsWeb() map[string]string {
	return map[string]string{"db.yaml": netpol("db", "default",
		"  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n")}
}

// addLabelled adds a pod named name, labelled app=app, to n through the
// CNI arguments a runtime passes.
func addLabelled(t *testing.T, n *rig.Node, name, app string) *rig.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := n.AddPodWithArgs(ctx, name, [][2]string{{"K8S_POD_NAME", name}, {"LOOM_POD_LABELS", "app:" + app}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// setLabels sets labels of a pod through its node's agent, as `loomctl
// pods label` does.
func setLabels(t *testing.T, p *rig.Pod, labels map[string]string) {
	t.Helper()
	_, err := p.Node.Client().Label(context.Background(), api.LabelRequest{
		PodRef: api.PodRef{ContainerID: p.ContainerID, IfName: "eth0"}, Set: labels})
	if err != nil {
		t.Fatal(err)
	}
}

// onlyWebReachesDB checks dbAdmitsWeb: web connects to db's port 80 (see
// serve), other does not.
func onlyWebReachesDB(web, other, db *rig.Pod) error {
	to := net.JoinHostPort(db.IP.String(), "80")
	if err := connect(web.NS, "tcp", to); err != nil {
		return fmt.Errorf("web %s cannot connect to db %s: %w", web.IP, db.IP, err)
	}
	if connect(other.NS, "tcp", to) == nil {
		return fmt.Errorf("other %s connects to db %s, which admits only web", other.IP, db.IP)
	}
	return nil
}

// TestNetworkPolicyTruthTable runs the upstream e2e suite's grid (pods a,
// b, c in namespaces x, y, z, spread over 3 nodes) through policy cases
// and checks the full 9×9 matrix for each, printing the difference when
// the fabric disagrees with the expected matrix.
func TestNetworkPolicyTruthTable(t *testing.T) {
	r := newRig(t)
	nodes := startPolicyNodes(t, r, 3, nil)
	var dirs []string
	for _, n := range nodes {
		dirs = append(dirs, policyDir(r, n.Name))
	}
	waitConverged(t, nodes)

	var grid []*netpolPod
	byID := map[string]*netpolPod{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, nsName := range []string{"x", "y", "z"} {
		for j, name := range []string{"a", "b", "c"} {
			node := nodes[(i+j)%3]
			p, err := node.AddPodWithArgs(ctx, nsName+name, [][2]string{
				{"K8S_POD_NAMESPACE", nsName}, {"K8S_POD_NAME", name}, {"LOOM_POD_LABELS", "pod:" + name},
			})
			if err != nil {
				t.Fatal(err)
			}
			serve(t, p.NS)
			gp := &netpolPod{ns: nsName, name: name, pod: p}
			grid = append(grid, gp)
			byID[gp.id()] = gp
		}
	}
	podOf := func(id string) *netpolPod { return byID[id] }
	relabel := func(t *testing.T, id string, labels map[string]string) { setLabels(t, podOf(id).pod, labels) }
	all := func(*netpolPod, *netpolPod, probe) bool { return true }

	cases := []policyCase{
		{name: "no policies: everything connects", probes: []probe{tcp80, udp80}, allow: all},
		{name: "deny all ingress in x", probes: []probe{tcp80, udp80},
			files: map[string]string{"p.yaml": netpol("deny", "x", "  podSelector: {}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.ns != "x" }},
		{name: "deny all egress in x, DNS allowed", probes: []probe{tcp80, udp53},
			files: map[string]string{"p.yaml": netpol("deny-egress", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}\n    - {protocol: TCP, port: 53}\n")},
			allow: func(f, to *netpolPod, p probe) bool { return f.ns != "x" || p == udp53 }},
		{name: "allow x/a from its own namespace", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("same-ns", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.ns == "x" }},
		{name: "allow x/a from namespaceSelector ns=y", probes: []probe{tcp80, udp80},
			files: map[string]string{"p.yaml": netpol("from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.ns == "y" }},
		{name: "update: the same policy now allows ns=z", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [z]}]}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.ns == "z" }},
		{name: "podSelector AND namespaceSelector in one peer", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("and", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.id() == "y/b" }},
		{name: "podSelector OR namespaceSelector as two peers", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("or", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.ns == "y" || f.id() == "x/b" }},
		{name: "ipBlock with except", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("block", "x", fmt.Sprintf("  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [%s/32]}\n", podOf("y/b").pod.IP))},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.id() != "y/b" }},
		{name: "port: only tcp/81 into x/a", probes: []probe{tcp80, tcp81},
			files: map[string]string{"p.yaml": netpol("port", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81}\n")},
			allow: func(f, to *netpolPod, p probe) bool { return to.id() != "x/a" || p == tcp81 }},
		{name: "endPort: tcp/80-81 into x/a, not udp", probes: []probe{tcp80, tcp81, udp80},
			files: map[string]string{"p.yaml": netpol("range", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 80, endPort: 81}\n")},
			allow: func(f, to *netpolPod, p probe) bool { return to.id() != "x/a" || p.proto == "tcp" }},
		{name: "UDP only into x/a", probes: []probe{tcp80, udp80},
			files: map[string]string{"p.yaml": netpol("udp", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: UDP, port: 80}\n")},
			allow: func(f, to *netpolPod, p probe) bool { return to.id() != "x/a" || p == udp80 }},
		{name: "egress from x only to namespace y", probes: []probe{tcp80, udp80},
			files: map[string]string{"p.yaml": netpol("to-y", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n")},
			allow: func(f, to *netpolPod, _ probe) bool { return f.ns != "x" || to.ns == "y" }},
		{name: "union of two policies on x/a", probes: []probe{tcp80},
			files: map[string]string{
				"p.yaml": netpol("from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"),
				"q.yaml": netpol("from-za", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n      podSelector: {matchLabels: {pod: a}}\n"),
			},
			allow: func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.ns == "y" || f.id() == "z/a" }},
		{name: "ingress and egress isolation on one pod", probes: []probe{tcp80},
			files: map[string]string{"p.yaml": netpol("both", "y", "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n  egress:\n  - to:\n    - podSelector: {matchLabels: {pod: c}}\n")},
			allow: func(f, to *netpolPod, _ probe) bool {
				if to.id() == "y/b" && f.ns != "x" {
					return false
				}
				return f.id() != "y/b" || to.id() == "y/c"
			}},
		{name: "pod label change: z/c relabelled pod=b is let in", probes: []probe{tcp80},
			files:   map[string]string{"p.yaml": netpol("from-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n")},
			relabel: func(t *testing.T) { relabel(t, "z/c", map[string]string{"pod": "b"}) },
			allow:   func(f, to *netpolPod, _ probe) bool { return to.id() != "x/a" || f.name == "b" || f.id() == "z/c" }},
		{name: "policy deleted: everything connects again", probes: []probe{tcp80, udp80},
			relabel: func(t *testing.T) { relabel(t, "z/c", map[string]string{"pod": "c"}) },
			allow:   all},
	}
	for _, c := range cases {
		if !t.Run(c.name, func(t *testing.T) {
			if c.relabel != nil {
				c.relabel(t)
			}
			files := map[string]string{"namespaces.yaml": netpolNamespaces}
			for k, v := range c.files {
				files[k] = v
			}
			for _, d := range dirs {
				writePolicyDir(t, d, files)
			}
			checkMatrix(t, grid, c.probes, c.allow)
		}) {
			return
		}
	}

	t.Run("a bad file keeps the last good set in force", func(t *testing.T) {
		files := map[string]string{"namespaces.yaml": netpolNamespaces, "p.yaml": netpol("deny", "x", "  podSelector: {}\n")}
		for _, d := range dirs {
			writePolicyDir(t, d, files)
		}
		deny := func(f, to *netpolPod, _ probe) bool { return to.ns != "x" }
		checkMatrix(t, grid, []probe{tcp80}, deny)
		files["p.yaml"] = netpol("deny", "x", "  podSelector: {}\n  ingres: []\n")
		for _, d := range dirs {
			writePolicyDir(t, d, files)
		}
		err := rig.Eventually(10*time.Second, func() error {
			st, err := nodes[0].Client().Policy(context.Background())
			if err != nil {
				return err
			}
			if !strings.Contains(st.Error, "p.yaml:1") || !strings.Contains(st.Error, `unknown field "ingres"`) {
				return fmt.Errorf("policy status error = %q, want the file, line and field", st.Error)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkMatrix(t, grid, []probe{tcp80}, deny)
		st, err := nodes[0].Client().Policy(context.Background())
		if err != nil || len(st.Policies) != 1 || st.Policies[0] != "x/deny" {
			t.Fatalf("policies in force = %v (%v), want [x/deny]", st.Policies, err)
		}
	})
}

// writePolicyDir makes dir hold exactly files, each written to a
// temporary name and renamed, as a config management tool would.
func writePolicyDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range old {
		if _, keep := files[filepath.Base(f)]; !keep {
			os.Remove(f)
		}
	}
	for name, body := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// serve starts, inside a pod's namespace, TCP listeners on 80 and 81 that
// accept and close, and UDP echo servers on 53 and 80.
func serve(t *testing.T, nsName string) {
	t.Helper()
	for _, port := range []int{80, 81} {
		serveIn(t, nsName, fmt.Sprintf(":%d", port))
	}
	err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		for _, port := range []int{53, 80} {
			pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			t.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 64)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", nsName, err)
	}
}

// connect makes one probe from a pod to an address: a TCP handshake, or a
// UDP datagram echoed back, within the timeout.
func connect(nsName, proto, addr string) error {
	const timeout = 800 * time.Millisecond
	return ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		c, err := net.DialTimeout(proto+"4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if proto == "tcp" {
			return nil
		}
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("probe")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		return nil
	})
}

// checkMatrix probes every ordered pair (self included) with every probe
// until the observed matrix equals the expected one, and fails with both
// matrices and their difference if it does not within the deadline.
func checkMatrix(t *testing.T, grid []*netpolPod, probes []probe, allow func(from, to *netpolPod, p probe) bool) {
	t.Helper()
	var last string
	err := rig.Eventually(20*time.Second, func() error {
		var mu sync.Mutex
		var wrong []string
		got := map[string]bool{}
		var wg sync.WaitGroup
		for _, from := range grid {
			for _, to := range grid {
				for _, p := range probes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ok := connect(from.pod.NS, p.proto, net.JoinHostPort(to.pod.IP.String(), fmt.Sprint(p.port))) == nil
						want := from == to || allow(from, to, p)
						mu.Lock()
						defer mu.Unlock()
						got[from.id()+">"+to.id()+" "+p.String()] = ok
						if ok != want {
							wrong = append(wrong, fmt.Sprintf("%s -> %s %s: got %v, want %v", from.id(), to.id(), p, ok, want))
						}
					}()
				}
			}
		}
		wg.Wait()
		if len(wrong) == 0 {
			return nil
		}
		last = renderMatrix(grid, probes, got, allow)
		return errors.New(strings.Join(wrong, "\n"))
	})
	if err != nil {
		t.Fatalf("reachability differs from the expected matrix:\n%v\n%s", err, last)
	}
}

// renderMatrix prints observed vs expected per probe, upstream style:
// rows are sources, columns destinations, "." connects, "X" does not,
// and a wrong cell is shown as "!".
func renderMatrix(grid []*netpolPod, probes []probe, got map[string]bool, allow func(from, to *netpolPod, p probe) bool) string {
	var b strings.Builder
	for _, p := range probes {
		fmt.Fprintf(&b, "%s (! = differs from expected)\n      ", p)
		for _, to := range grid {
			fmt.Fprintf(&b, "%-4s", to.id())
		}
		b.WriteString("\n")
		for _, from := range grid {
			fmt.Fprintf(&b, "%-6s", from.id())
			for _, to := range grid {
				ok := got[from.id()+">"+to.id()+" "+p.String()]
				want := from == to || allow(from, to, p)
				cell := "X"
				if ok {
					cell = "."
				}
				if ok != want {
					cell = "!"
				}
				fmt.Fprintf(&b, "%-4s", cell)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// TestReusedAddressInheritsNoFlows: a pod allowed to reach two databases,
// one on its node and one on another, talks to both over UDP, then goes;
// a pod no policy allows gets its address and sends on the same flows.
// Connection tracking still held them on both nodes, and policy accepts
// established flows without looking further: unless the flows of an
// address are deleted when it is given up (here, and on the peers that
// hear of the deletion), the new pod reaches the databases.
func TestReusedAddressInheritsNoFlows(t *testing.T) {
	r := newRig(t)
	// Six pod addresses a node: the test fills them to choose which
	// address the next pod gets.
	nodes := startPolicyNodes(t, r, 2, map[string]string{"db.yaml": netpol("db", "x",
		"  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: client}}\n")},
		"--subnet-prefix", "29")
	waitConverged(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pod := func(n *rig.Node, name, app string) *rig.Pod {
		p, err := n.AddPodWithArgs(ctx, name, [][2]string{{"K8S_POD_NAMESPACE", "x"}, {"K8S_POD_NAME", name}, {"LOOM_POD_LABELS", "app:" + app}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Addresses are given out round-robin: the client's is the next one
	// once the fillers hold the rest.
	client := pod(nodes[0], "client", "client")
	dbs := []*rig.Pod{pod(nodes[0], "db-here", "db"), pod(nodes[1], "db-there", "db")}
	var fillers []*rig.Pod
	for i := 0; i < 4; i++ {
		fillers = append(fillers, pod(nodes[0], fmt.Sprintf("filler%d", i), "none"))
	}
	// From a fixed port, as a pod reconnecting to its database would.
	reaches := func(p, db *rig.Pod) error {
		return connectFrom(p.NS, 40000, net.JoinHostPort(db.IP.String(), "80"))
	}
	for _, db := range dbs {
		serve(t, db.NS)
		if err := rig.Eventually(20*time.Second, func() error { return reaches(client, db) }); err != nil {
			t.Fatalf("the client does not reach %s: %v", db.Name, err)
		}
	}
	if err := client.Del(ctx); err != nil {
		t.Fatal(err)
	}
	intruder := pod(nodes[0], "intruder", "none")
	if intruder.IP != client.IP {
		t.Fatalf("the intruder got %s, not the client's %s: the test's premise failed", intruder.IP, client.IP)
	}
	// On its own node the flows were deleted before the address was given
	// out again: the very first probe is refused.
	if err := reaches(intruder, dbs[0]); err == nil {
		t.Fatal("the intruder's first probe reached the database on its node on its predecessor's flow")
	}
	// The other node deletes them when it hears of the deletion. Every
	// probe that passes keeps the old flow alive: without the deletion
	// this never stops passing.
	for _, db := range dbs {
		if err := rig.Eventually(10*time.Second, func() error {
			if err := reaches(intruder, db); err == nil {
				return fmt.Errorf("a pod no policy allows reaches %s on its predecessor's flow", db.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fillers[0].Del(ctx); err != nil {
		t.Fatal(err)
	}
	client2 := pod(nodes[0], "client2", "client")
	for _, db := range dbs {
		if err := rig.Eventually(10*time.Second, func() error { return reaches(client2, db) }); err != nil {
			t.Fatalf("an allowed pod no longer reaches %s: %v", db.Name, err)
		}
	}
}

// connectFrom sends a UDP datagram from a pod's local port to addr and
// waits for the echo.
func connectFrom(nsName string, port int, addr string) error {
	return ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		raddr, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err := net.DialUDP("udp4", &net.UDPAddr{Port: port}, raddr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(800 * time.Millisecond))
		if _, err := c.Write([]byte("probe")); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 16))
		return err
	})
}

// TestAgentRestartKeepsPeersFlows: a restarting agent must not tell its
// peers that its pods are gone. At its first exchange peers send it what
// they hold of its pods; it used to answer with deletions (its pod
// directory was still empty), and every peer dropped the pods from its
// policies and deleted their flows until the first reconcile published
// them again.
func TestAgentRestartKeepsPeersFlows(t *testing.T) {
	r := newRig(t)
	nodes := startNodes(t, r, 2)
	a, c, b := addPod(t, nodes[0], "a"), addPod(t, nodes[0], "c"), addPod(t, nodes[1], "b")
	serve(t, b.NS)
	for _, p := range []*rig.Pod{a, c} {
		if err := rig.Eventually(20*time.Second, func() error {
			return connectFrom(p.NS, 40000, net.JoinHostPort(b.IP.String(), "80"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	nodes[0].Stop(syscall.SIGKILL)
	startReady(t, nodes[0], nodes[1])
	// Its pods did not change: it had nothing to tell about them. All it
	// sent was b's record, which was news to it (it relays news).
	sent, err := nodes[0].Metric("loom_gossip_messages_total", `direction="sent",type="pods"`)
	if err != nil {
		t.Fatal(err)
	}
	if sent > 1 {
		t.Fatalf("node1 sent %v pod directory updates when it started again with the same pods, want only b's relayed", sent)
	}
	// The deletions it used to send raced its own correction: if they won,
	// node2 deleted a's flows. A barrier: c goes, and node2 deletes its
	// flows in a pass that also takes whatever node2 was told before.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Del(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(20*time.Second, func() error {
		if v, err := nodes[1].Metric("loom_conntrack_entries_deleted_total", ""); err != nil || v < 1 {
			return fmt.Errorf("node2 has not deleted c's flows yet (%v deleted, %v)", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nsh, err := netns.GetFromPath("/run/netns/" + nodes[1].NS)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	k, err := overlay.NewNetlinkKernelAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if n, err := k.ConntrackDelete([]netip.Prefix{netip.PrefixFrom(a.IP, 32)}); err != nil || n == 0 {
		t.Fatalf("node2 no longer tracks a's flow after node1's agent restarted (%d entries, %v)", n, err)
	}
}

// TestHandoverWhileDownDeletesFlows: a subnet that changes hands while a
// node's agent is down leaves that node's kernel tracking flows of the
// old holder's pods, which the new holder's pods then inherit. The agent
// remembers who held each subnet, so its first reconcile after the
// restart sees the handover and deletes them.
func TestHandoverWhileDownDeletesFlows(t *testing.T) {
	// Two subnets: the late node gets the dead node's once it is released.
	r := newRig(t, "--cluster-cidr", "10.244.0.0/23", "--dead-node-grace", "0s")
	nodes := startNodes(t, r, 2)
	a, b := addPod(t, nodes[0], "a"), addPod(t, nodes[1], "b")
	serve(t, b.NS)
	to := net.JoinHostPort(b.IP.String(), "80")
	if err := rig.Eventually(20*time.Second, func() error { return connectFrom(a.NS, 40000, to) }); err != nil {
		t.Fatal(err)
	}
	// The flow stays in node1's table for the rest of the test: probes
	// keep it from timing out, answered or not.
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
				connectFrom(a.NS, 40000, to)
			}
		}
	}()
	gone, err := nodes[1].Status()
	if err != nil {
		t.Fatal(err)
	}
	// The late node joins and waits for a free subnet.
	late := addStarted(t, r, "late", nodes[0])
	if err := rig.Eventually(20*time.Second, func() error {
		st, err := late.Status()
		if err == nil && len(st.Peers) < 2 {
			err = fmt.Errorf("late knows %d peers, want 2", len(st.Peers))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	nodes[0].Stop(syscall.SIGTERM)
	nodes[1].Stop(syscall.SIGKILL)
	ctl := func(args ...string) (string, error) {
		return rig.Run(filepath.Join(binaries(t), "loomctl"), append([]string{"--socket", late.Socket}, args...)...)
	}
	// node1's agent is down and node2's dead: the late node holds
	// node2's subnet once it is released.
	if err := rig.Eventually(30*time.Second, func() error {
		_, err := ctl("rmpeer", "node2")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := late.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := late.Status(); err != nil || st.Node.Subnet != gone.Node.Subnet {
		t.Fatalf("late holds %v (%v), want node2's %s", st.Node.Subnet, err, gone.Node.Subnet)
	}
	if err := nodes[0].Start(late); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		if v, err := nodes[0].Metric("loom_conntrack_entries_deleted_total", ""); err != nil || v < 1 {
			return fmt.Errorf("node1 deleted %v connection tracking entries (%v), want those of node2's pod", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyKeepsPeersPodsAcrossRestart: an agent that restarts while a
// peer's agent is down too (every agent restarted at once) keeps that
// peer's pods in its policies. It learned their labels from gossip, which
// the peer cannot repeat until it is back; it used to start without them,
// and refuse the connections its policies allow from them.
func TestPolicyKeepsPeersPodsAcrossRestart(t *testing.T) {
	// The grace keeps node1 from settling while node2's agent is down, as
	// it does for a restart of every agent: the window under test.
	r := newRig(t, "--dead-node-grace", "2m")
	nodes := startPolicyNodes(t, r, 2, dbAdmitsWeb())
	db, web, other := addLabelled(t, nodes[0], "db", "db"), addLabelled(t, nodes[1], "web", "web"), addLabelled(t, nodes[1], "other", "other")
	serve(t, db.NS)
	enforced := func() error { return onlyWebReachesDB(web, other, db) }
	if err := rig.Eventually(30*time.Second, enforced); err != nil {
		t.Fatal(err)
	}
	nodes[1].Stop(syscall.SIGKILL)
	nodes[0].Stop(syscall.SIGKILL)
	startReady(t, nodes[0], nodes[1])
	if err := rig.Eventually(20*time.Second, enforced); err != nil {
		t.Fatalf("after node1's agent restarted with node2's down: %v", err)
	}
	if st, err := nodes[0].Status(); err != nil || len(st.Peers) != 0 {
		t.Fatalf("node1 knows peers %+v (%v): node2's agent came back, so the test proves nothing", st.Peers, err)
	}
}

// TestPodChangesUnderPolicyKeepTheTable: pods coming, going and changing
// labels under policy change elements of the table (peer set addresses,
// the verdict maps' veth → chain entries), never the table itself, as
// long as no rule set appears or goes. Each such change used to rewrite
// the whole table, every policy's sets and chains (about 150 ms for 100
// policies in `loombench -only policy`): a node's busy rewrites delayed
// the first packets of new pods elsewhere, and the ADD of a pod with the
// labels of pods already running (a replica) waited for one. A table
// replaced gets a new handle.
func TestPodChangesUnderPolicyKeepTheTable(t *testing.T) {
	r := newRig(t)
	nodes := startPolicyNodes(t, r, 2, dbAdmitsWeb())
	db := addLabelled(t, nodes[0], "db", "db")
	serve(t, db.NS)
	web := addLabelled(t, nodes[1], "web", "web")
	other := addLabelled(t, nodes[1], "other", "other")
	reachOnly := func(web, other *rig.Pod, dbs ...*rig.Pod) {
		t.Helper()
		for _, db := range dbs {
			if err := rig.Eventually(30*time.Second, func() error { return onlyWebReachesDB(web, other, db) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	reachOnly(web, other, db)
	handle := loomTableHandle(t, nodes[0])

	// A replica: its rules are those of a pod running, so is its chain.
	db2 := addLabelled(t, nodes[0], "db2", "db")
	serve(t, db2.NS)
	reachOnly(web, other, db2)

	policyOnly := mustMetric(t, nodes[0], "loom_reconcile_runs_total", `reason="pods (policy only)"`)
	setLabels(t, web, map[string]string{"app": "other"})
	setLabels(t, other, map[string]string{"app": "web"})
	reachOnly(other, web, db, db2)
	// Other nodes' pods touch only node1's policy: it is reconciled alone,
	// not with every route, link and neighbour of the node.
	if n := mustMetric(t, nodes[0], "loom_reconcile_runs_total", `reason="pods (policy only)"`); n <= policyOnly {
		t.Errorf("node1 reconciled its policy alone %v times for node2's relabelled pods, want more than %v", n, policyOnly)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range []*rig.Pod{other, db2} {
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := rig.Eventually(30*time.Second, func() error {
		held := policySetAddrs(t, nodes[0])
		if len(held) != 0 {
			return fmt.Errorf("node1's policy peer sets hold %v; node2's last web pod %s is gone", held, other.IP)
		}
		veth := api.HostVethName(db2.ContainerID, "eth0")
		if out := mustExec(t, nodes[0], "nft", "list", "map", "ip", overlay.FirewallTable, "policy-ingress"); strings.Contains(out, veth) {
			return fmt.Errorf("node1's policy-ingress map still sends packets for deleted db2 (%s) to its chain:\n%s", veth, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if h := loomTableHandle(t, nodes[0]); h != handle {
		t.Fatalf("node1's table was replaced (handle %d, was %d) for pods of the rule sets in force: only elements should change", h, handle)
	}
}

// loomTableHandle is the kernel's handle of Loom's ip table on n.
func loomTableHandle(t *testing.T, n *rig.Node) int {
	t.Helper()
	var out struct {
		Nftables []struct {
			Table *struct {
				Name   string `json:"name"`
				Handle int    `json:"handle"`
			} `json:"table"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(mustExec(t, n, "nft", "-j", "list", "tables", "ip")), &out); err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Nftables {
		if o.Table != nil && o.Table.Name == overlay.FirewallTable {
			return o.Table.Handle
		}
	}
	t.Fatalf("%s has no table ip %s", n.Name, overlay.FirewallTable)
	return 0
}

// policySetAddrs lists the addresses in n's policy peer sets, by set.
func policySetAddrs(t *testing.T, n *rig.Node) map[string][]string {
	t.Helper()
	var out struct {
		Nftables []struct {
			Set *struct {
				Name string            `json:"name"`
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(mustExec(t, n, "nft", "-j", "list", "sets", "ip")), &out); err != nil {
		t.Fatal(err)
	}
	held := map[string][]string{}
	for _, o := range out.Nftables {
		if o.Set == nil || !strings.HasPrefix(o.Set.Name, "pol-") {
			continue
		}
		for _, e := range o.Set.Elem {
			held[o.Set.Name] = append(held[o.Set.Name], string(e))
		}
	}
	return held
}

// TestPodIsIsolatedWhenAddReturns: a pod that a policy isolates has its
// rules in force when its ADD returns, before the runtime starts its
// processes. Nothing listens in the new pods, so a connection to one is
// refused at once if its packets get through, and times out if the
// policy drops them; each is tried the moment its ADD returns, before the
// reconcile that ADD asks for could run.
func TestPodIsIsolatedWhenAddReturns(t *testing.T) {
	r := newRig(t)
	// Policies that admit nothing the probe sends, a hundred of them: a
	// reconcile after the ADD has a large table to write, so an agent that
	// only answered first would let the probe in.
	files := map[string]string{}
	for i := range 100 {
		files[fmt.Sprintf("db%d.yaml", i)] = netpol(fmt.Sprintf("db%d", i), "default", fmt.Sprintf(
			"  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 192.168.%d.0/24}\n    ports: [{port: %d}]\n", i, 9000+i))
	}
	nodes := startPolicyNodes(t, r, 2, files)
	client := addLabelled(t, nodes[1], "client", "client")
	probe := func(p *rig.Pod) error {
		return ns.WithNetNSPath("/run/netns/"+client.NS, func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp4", net.JoinHostPort(p.IP.String(), "80"), 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	// The first pod of each kind makes its rule set's chain (a table
	// write); the next ones only join it. Both must be isolated at once.
	for i := range 6 {
		db := addLabelled(t, nodes[0], fmt.Sprintf("db%d", i), "db")
		err := probe(db)
		if opErr := new(net.OpError); !errors.As(err, &opErr) || !opErr.Timeout() {
			t.Fatalf("a connection to db%d right after its ADD: %v, want a timeout (its policy dropping it)", i, err)
		}
	}
	// A pod no policy selects is reachable: the probe tells the two apart.
	other := addLabelled(t, nodes[0], "other", "other")
	if err := probe(other); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a connection to a pod no policy selects: %v, want refused (nothing listens)", err)
	}
}

// TestPodNewsGoesFirstToItsWatchers: a pod's record goes at once, not in
// the next gossip round, to the nodes whose policies name it as a peer,
// and only to them. db on node1 admits web; node3 runs a pod no policy
// selects. A web pod attached on node2 is sent to node1 alone; a pod no
// policy names is sent to nobody; web relabelled away is sent to node1,
// which must drop it from its peer set.
func TestPodNewsGoesFirstToItsWatchers(t *testing.T) {
	r := newRig(t)
	nodes := startPolicyNodes(t, r, 3, dbAdmitsWeb())
	db := addLabelled(t, nodes[0], "db", "db")
	addLabelled(t, nodes[2], "bystander", "other")
	serve(t, db.NS)
	// node2 reads whom to tell from its pod directory: it must know db.
	if err := rig.Eventually(30*time.Second, func() error {
		if v, err := nodes[1].Metric("loom_pod_directory_records", `state="live"`); err != nil || v < 2 {
			return fmt.Errorf("node2's pod directory holds %v live records (%v), want db's and bystander's", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	direct := func(n *rig.Node) float64 {
		t.Helper()
		v, err := n.Metric("loom_gossip_messages_total", `direction="direct",type="pods"`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	expectDirect := func(what string, want float64) {
		t.Helper()
		if got := direct(nodes[1]); got != want {
			t.Fatalf("%s: node2 has sent %v pod directory updates at once, want %v", what, got, want)
		}
	}
	expectDirect("before its pods", 0)
	web := addLabelled(t, nodes[1], "web", "web")
	// Sent before the ADD was answered: to node1, not to node3.
	expectDirect("web attached", 1)
	if err := rig.Eventually(20*time.Second, func() error {
		return connectFrom(web.NS, 40100, net.JoinHostPort(db.IP.String(), "80"))
	}); err != nil {
		t.Fatalf("web never reached db: %v", err)
	}
	addLabelled(t, nodes[1], "other", "other")
	expectDirect("a pod no policy names attached", 1)
	setLabels(t, web, map[string]string{"app": "other"})
	expectDirect("web relabelled other", 2)
	if err := rig.Eventually(20*time.Second, func() error {
		for _, addrs := range policySetAddrs(t, nodes[0]) {
			if slices.Contains(addrs, strconv.Quote(web.IP.String())) {
				return fmt.Errorf("node1's peer sets still hold the relabelled web pod %s: %v", web.IP, addrs)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// node1 and node3 attached no pod a policy names.
	for _, n := range []*rig.Node{nodes[0], nodes[2]} {
		if v := direct(n); v != 0 {
			t.Fatalf("%s sent %v pod directory updates at once; no policy names its pods", n.Name, v)
		}
	}
}

// TestRestartWithABadPolicyDirKeepsTheNode: an agent restarted while its
// policy directory holds no good set stays in the fabric: it keeps the
// policies of its last run in force and its pods routed from every node,
// serves no new pod and says why, until the directory is mended. (A
// directory broken under a running agent keeps the last good set, as
// before.)
func TestRestartWithABadPolicyDirKeepsTheNode(t *testing.T) {
	r := newRig(t)
	// Without grace a node gone is withdrawn as soon as it is declared dead.
	nodes := startPolicyNodes(t, r, 2, dbAdmitsWeb(), "--dead-node-grace", "0s")
	web, other := addLabelled(t, nodes[0], "web", "web"), addLabelled(t, nodes[0], "other", "other")
	db := addLabelled(t, nodes[1], "db", "db")
	dbAddr := net.JoinHostPort(db.IP.String(), "8080")
	serveIn(t, db.NS, dbAddr)
	inForce := admitsOnly(dbAddr, web, other)
	if err := rig.Eventually(30*time.Second, inForce); err != nil {
		t.Fatalf("policies not in force: %v", err)
	}
	dir := policyDir(r, nodes[1].Name)
	writePolicyDir(t, dir, map[string]string{"db.yaml": "kind: NetworkPolicy\nspec: [\n"})
	restartWithPoliciesPending(t, nodes[1], nodes[0], web, db, inForce, "db.yaml", nil)
	writePolicyDir(t, dir, dbAdmitsWeb())
	if err := nodes[1].WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	addLabelled(t, nodes[1], "late", "late")
	if err := inForce(); err != nil {
		t.Fatalf("the directory mended: %v", err)
	}
}

// admitsOnly is a check that allowed connects to addr and denied does
// not.
func admitsOnly(addr string, allowed, denied *rig.Pod) func() error {
	return func() error {
		if err := dialFrom(allowed.NS, addr); err != nil {
			return fmt.Errorf("%s does not reach %s: %w", allowed.Name, addr, err)
		}
		if dialFrom(denied.NS, addr) == nil {
			return fmt.Errorf("%s reaches %s", denied.Name, addr)
		}
		return nil
	}
}

// restartWithPoliciesPending restarts n's agent, joining join, while
// the caller keeps its policies from loading, and checks that the restart
// costs nothing: from, pinging to (a pod of n) throughout, loses nothing
// past n's failure detection; n says it waits (for reasons that mention
// why) and refuses a new pod; inForce holds after. during runs while n
// waits.
func restartWithPoliciesPending(t *testing.T, n, join *rig.Node, from, to *rig.Pod, inForce func() error, why string, during func()) {
	t.Helper()
	pings := startPings(t, from, to, 1000) // 10 s: well past n's failure detection (about 5 s)
	if err := n.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(join); err != nil {
		t.Fatal(err)
	}
	waitNotReadyFor(t, n, 30*time.Second, "network policies not known yet", why)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st, err := n.Client().Policy(ctx); err != nil || !strings.Contains(st.Pending, "network policies not known yet") ||
		!strings.Contains(st.Pending, "the firewall of the last run stays in force") || len(st.Pods) != 0 {
		t.Fatalf("%s's policy status, its policies pending: %+v, %v; want it to say they are pending and the last run's firewall holds", n.Name, st, err)
	}
	if _, err := n.AddPodWithArgs(ctx, "refused", [][2]string{{"K8S_POD_NAME", "refused"}}); err == nil ||
		!strings.Contains(err.Error(), "network policies not known yet") {
		t.Fatalf("ADD on %s, its policies pending: %v, want a refusal for want of network policies", n.Name, err)
	}
	if during != nil {
		during()
	}
	if err := pings.losses(t); err != nil {
		t.Fatalf("%s lost %s while %s's agent restarted, its policies pending: %v", from.Name, to.Name, n.Name, err)
	}
	if err := inForce(); err != nil {
		t.Fatalf("%s, restarted with its policies pending, did not keep those of its last run: %v", n.Name, err)
	}
}
