package integration

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomnet/loom/integration/rig"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestKubernetesPolicySource runs loomd with --policy-source kubernetes
// against an API server (rig.FakeAPIServer, which answers list and watch):
// loomd starts its real loom-kube-policy helper, which follows the
// objects; a NetworkPolicy created in the API cuts a pod off, and a label
// changed on the client's Pod object lets it in again.
func TestKubernetesPolicySource(t *testing.T) {
	r := newRig(t)
	apiServer := rig.NewFakeAPIServer()
	apiServer.Set(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}}})
	nodes := startKubeNodes(t, r, apiServer, 2)
	web := addPod(t, nodes[0], "web")
	client := addPod(t, nodes[1], "client")
	podObject := func(name string, p *rig.Pod, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()}}
	}
	apiServer.Set(podObject("web", web, map[string]string{"app": "web"}))
	apiServer.Set(podObject("client", client, map[string]string{"app": "client"}))

	addr := net.JoinHostPort(web.IP.String(), "8080")
	serveIn(t, web.NS, addr)
	reach := func() error { return dialFrom(client.NS, addr) }
	cutOff := func() error {
		if reach() == nil {
			return fmt.Errorf("client still reaches web")
		}
		return nil
	}
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client cannot reach web before any policy: %v", err)
	}

	apiServer.Set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-frontend"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}},
			}}},
		}})
	if err := rig.Eventually(30*time.Second, cutOff); err != nil {
		t.Fatalf("the policy from the API was not enforced: %v", err)
	}

	apiServer.Set(podObject("client", client, map[string]string{"app": "frontend"}))
	if err := rig.Eventually(30*time.Second, reach); err != nil {
		t.Fatalf("client relabelled app=frontend in the API still cut off: %v", err)
	}

	// The helper dies: loomd starts it again, and the next change arrives.
	helper, err := rig.ChildProcess(nodes[0].Pid(), "loom-kube-policy")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	apiServer.Set(podObject("client", client, map[string]string{"app": "client"}))
	if err := rig.Eventually(30*time.Second, cutOff); err != nil {
		t.Fatalf("after the helper was killed, a label change in the API was not enforced: %v", err)
	}
	if again, err := rig.ChildProcess(nodes[0].Pid(), "loom-kube-policy"); err != nil || again == helper {
		t.Fatalf("helper after the kill: %d, %v (was %d)", again, err, helper)
	}
}

// startKubeNodes starts count nodes with --policy-source kubernetes
// against apiServer (see startKubeNode) and waits until all are ready and
// have programmed each other.
func startKubeNodes(t *testing.T, r *rig.Rig, apiServer *rig.FakeAPIServer, count int, args ...string) []*rig.Node {
	t.Helper()
	var nodes []*rig.Node
	for i := 1; i <= count; i++ {
		nodes = append(nodes, startKubeNode(t, r, apiServer, fmt.Sprintf("node%d", i), args, nodes...))
	}
	for _, n := range nodes {
		if err := n.WaitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, nodes)
	return nodes
}

// startKubeNode adds a node whose agent follows apiServer, seen on the
// node's own loopback (--policy-source kubernetes, and args), and starts
// it joining join. The node keeps the flags across restarts.
func startKubeNode(t *testing.T, r *rig.Rig, apiServer *rig.FakeAPIServer, name string, args []string, join ...*rig.Node) *rig.Node {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := rig.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	n, err := r.AddNode(name)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := rig.ServeAPI(n.NS, apiServer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	n.Args = append(append(n.Args, "--policy-source", "kubernetes", "--kubeconfig", kubeconfig), args...)
	if err := n.Start(join...); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKubernetesNodeDeletionFreesSubnet: a dead node's subnet stays
// reserved (for --lease-ttl, a day by default) while its Node object
// exists, since it may come back; once the cluster deletes the Node (scaled
// away, replaced), its subnet is released at once, so a cluster that
// replaces many nodes does not run out of subnets.
func TestKubernetesNodeDeletionFreesSubnet(t *testing.T) {
	r := newRig(t, "--dead-node-grace", "0s")
	apiServer := rig.NewFakeAPIServer()
	for i := 1; i <= 3; i++ {
		apiServer.Set(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node%d", i)}})
	}
	nodes := startKubeNodes(t, r, apiServer, 3)
	gone, err := nodes[2].Status()
	if err != nil {
		t.Fatal(err)
	}
	nodes[2].Stop(syscall.SIGKILL)
	lease := func() (string, error) {
		leases, err := nodes[0].Client().Subnets(context.Background())
		if err != nil {
			return "", err
		}
		for _, l := range leases {
			if l.Owner == "node3" && l.Subnet == gone.Node.Subnet {
				return l.State, nil
			}
		}
		return "", fmt.Errorf("node1 knows no lease of node3 on %s: %+v", gone.Node.Subnet, leases)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		if state, err := lease(); err != nil || state != "reserved" {
			return fmt.Errorf("node3's lease: %q, %v; want reserved", state, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// While its Node object exists, the dead node may come back.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if state, err := lease(); err != nil || state != "reserved" {
			t.Fatalf("node3's lease with its Node object in place: %q, %v; want it kept reserved", state, err)
		}
	}
	apiServer.Delete(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node3"}})
	for _, n := range nodes[:2] {
		if err := rig.Eventually(20*time.Second, func() error {
			leases, err := n.Client().Subnets(context.Background())
			if err != nil {
				return err
			}
			for _, l := range leases {
				if l.Owner == "node3" && l.State != "released" {
					return fmt.Errorf("%s holds node3's lease on %s %s", n.Name, l.Subnet, l.State)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKubernetesPodAdmittedBeforeKubeletReportsIt: kubelet writes a pod's
// address into the API only after its sandbox is up, and the pod may be
// talking by then. Until it does, other nodes take the address from the
// record the pod's own node published (the pod directory): a web pod
// whose Pod object has no address yet reaches a db on another node that
// admits app=web, and the db's node has its address in the peer set. The
// record went, before the ADD returned, straight to the db's node (whose
// policy names web) and to no other: not to node3, whose bystander no
// policy selects.
func TestKubernetesPodAdmittedBeforeKubeletReportsIt(t *testing.T) {
	r := newRig(t)
	apiServer := rig.NewFakeAPIServer()
	setShopDBFromWeb(apiServer)
	// Selects pods labelled app=marked: a sign of which view a node has.
	apiServer.Set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "marked"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "marked"}}}})
	nodes := startKubeNodes(t, r, apiServer, 3)
	podObject := func(name, node string, p *rig.Pod) *corev1.Pod { return shopPodObject(name, name, "", node, p) }
	addKubePod := func(n *rig.Node, name string) *rig.Pod { return addShopPod(t, n, name, name, "") }
	db := addKubePod(nodes[0], "db")
	apiServer.Set(podObject("db", "node1", db))
	other := addKubePod(nodes[1], "other")
	apiServer.Set(podObject("other", "node2", other))
	bystander := addKubePod(nodes[2], "bystander")
	apiServer.Set(podObject("bystander", "node3", bystander))
	addr := net.JoinHostPort(db.IP.String(), "8080")
	serveIn(t, db.NS, addr)
	// The policy is in force: a pod it does not admit is cut off.
	if err := rig.Eventually(30*time.Second, func() error {
		if dialFrom(other.NS, addr) == nil {
			return fmt.Errorf("other still reaches db")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Scheduled to node2; kubelet never reports its address here.
	apiServer.Set(podObject("web", "node2", nil))
	// Pod events come in order: once node2 sees other relabelled, it
	// knows web's object too, as kubelet's node does by the ADD.
	marked := podObject("other", "node2", other)
	marked.Labels["app"] = "marked"
	apiServer.Set(marked)
	if err := rig.Eventually(30*time.Second, func() error {
		st, err := nodes[1].Client().Policy(context.Background())
		if err != nil {
			return err
		}
		for _, pp := range st.Pods {
			if pp.Name == "other" && slices.Contains(pp.Policies, "shop/marked") {
				return nil
			}
		}
		return fmt.Errorf("node2 has not seen other relabelled: %+v", st.Pods)
	}); err != nil {
		t.Fatal(err)
	}
	direct := func() float64 {
		t.Helper()
		v, err := nodes[1].Metric("loom_gossip_messages_total", `direction="direct",type="pods"`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := direct(); v != 0 {
		t.Fatalf("node2 sent %v pod directory updates at once before web; no policy names its pods", v)
	}
	web := addKubePod(nodes[1], "web")
	if v := direct(); v != 1 {
		t.Fatalf("web's ADD returned, node2 has sent %v pod directory updates at once; want 1, to node1", v)
	}
	if err := rig.Eventually(30*time.Second, func() error { return dialFrom(web.NS, addr) }); err != nil {
		t.Fatalf("web, its address not in the API, never reached db: %v", err)
	}
	if !policySetsHold(t, nodes[0], web.IP) {
		t.Fatalf("node1's peer sets %v do not hold web's address %s", policySetAddrs(t, nodes[0]), web.IP)
	}
}

// setShopDBFromWeb gives apiServer the namespace shop and a policy there
// admitting to app=db only app=web.
func setShopDBFromWeb(apiServer *rig.FakeAPIServer) {
	apiServer.Set(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	apiServer.Set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-from-web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			}}},
		}})
}

// shopPodObject is the Pod object of a pod in shop labelled app=app,
// scheduled to node: running at p's address, or pending (kubelet has not
// reported an address) when p is nil.
func shopPodObject(name, app string, uid types.UID, node string, p *rig.Pod) *corev1.Pod {
	o := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: uid, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	if p != nil {
		o.Status.Phase, o.Status.PodIP = corev1.PodRunning, p.IP.String()
	}
	return o
}

// addShopPod attaches a pod to n as kubelet would: named in CNI_ARGS
// (namespace shop), with its Pod UID when uid is set, under the pod
// namespace nsName.
func addShopPod(t *testing.T, n *rig.Node, nsName, name string, uid types.UID) *rig.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}}
	if uid != "" {
		args = append(args, [2]string{"K8S_POD_UID", string(uid)})
	}
	p, err := n.AddPodWithArgs(ctx, nsName, args)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// policySetsHold reports whether any of n's policy peer sets holds ip.
func policySetsHold(t *testing.T, n *rig.Node, ip netip.Addr) bool {
	t.Helper()
	for _, addrs := range policySetAddrs(t, n) {
		if slices.Contains(addrs, strconv.Quote(ip.String())) {
			return true
		}
	}
	return false
}

// TestKubernetesRecreatedPodIsNotLentItsPredecessorsAddress: a pod
// awaiting its address in the API is admitted elsewhere at the address
// its node published under its name, but only its own: a StatefulSet pod
// force-deleted while still running and recreated on the same node under
// the same name (another Pod UID) is not admitted at its predecessor's
// address, which the predecessor, still attached, keeps publishing.
func TestKubernetesRecreatedPodIsNotLentItsPredecessorsAddress(t *testing.T) {
	r := newRig(t)
	apiServer := rig.NewFakeAPIServer()
	setShopDBFromWeb(apiServer)
	nodes := startKubeNodes(t, r, apiServer, 2)
	db := addShopPod(t, nodes[0], "db", "db", "")
	apiServer.Set(shopPodObject("db", "db", "", "node1", db))
	addr := net.JoinHostPort(db.IP.String(), "8080")
	serveIn(t, db.NS, addr)

	// Kubelet never reports an address here: web-0 is known by its record.
	apiServer.Set(shopPodObject("web-0", "web", "uid-old", "node2", nil))
	old := addShopPod(t, nodes[1], "web-0-old", "web-0", "uid-old")
	if err := rig.Eventually(30*time.Second, func() error {
		if !policySetsHold(t, nodes[0], old.IP) {
			return fmt.Errorf("node1's peer sets %v do not hold web-0's address %s", policySetAddrs(t, nodes[0]), old.IP)
		}
		return dialFrom(old.NS, addr)
	}); err != nil {
		t.Fatalf("web-0, its address not in the API, never admitted to db: %v", err)
	}

	// Force-deleted and recreated: the old sandbox is still attached.
	apiServer.Set(shopPodObject("web-0", "web", "uid-new", "node2", nil))
	if err := rig.Eventually(30*time.Second, func() error {
		if policySetsHold(t, nodes[0], old.IP) {
			return fmt.Errorf("node1's peer sets %v still hold the predecessor's address %s", policySetAddrs(t, nodes[0]), old.IP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if dialFrom(old.NS, addr) == nil {
		t.Fatal("the predecessor, its Pod object gone, still reaches db")
	}

	current := addShopPod(t, nodes[1], "web-0-new", "web-0", "uid-new")
	if err := rig.Eventually(30*time.Second, func() error { return dialFrom(current.NS, addr) }); err != nil {
		t.Fatalf("the recreated web-0 never reached db: %v", err)
	}
	if policySetsHold(t, nodes[0], old.IP) || !policySetsHold(t, nodes[0], current.IP) {
		t.Fatalf("node1's peer sets %v: want %s (web-0) and not %s (its predecessor)", policySetAddrs(t, nodes[0]), current.IP, old.IP)
	}
	if dialFrom(old.NS, addr) == nil {
		t.Fatal("the predecessor reaches db again once web-0 is attached")
	}
}

// TestKubernetesAgentRestartsWhileTheAPIIsDown: an agent restarted while
// the API server is down rejoins the fabric at once, so its peers keep
// routing to its pods, and keeps the policies of its last run in force
// (neither opening its pods nor cutting them off); it serves no new pod
// until the API is back, and says why. A node new to the fabric joins as
// well, with its firewall's guards up, and writes no CNI config until
// then.
func TestKubernetesAgentRestartsWhileTheAPIIsDown(t *testing.T) {
	r := newRig(t)
	apiServer := rig.NewFakeAPIServer()
	setShopDBFromWeb(apiServer)
	// Enforced on node2, where web runs: only db may connect to it.
	apiServer.Set(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
			}}},
		}})
	// Without grace a node gone is withdrawn as soon as it is declared dead.
	nodes := startKubeNodes(t, r, apiServer, 2, "--dead-node-grace", "0s")
	attach := func(n *rig.Node, name string) *rig.Pod {
		p := addShopPod(t, n, name, name, "")
		apiServer.Set(shopPodObject(name, name, "", n.Name, p))
		return p
	}
	db, web, other := attach(nodes[0], "db"), attach(nodes[1], "web"), attach(nodes[1], "other")
	webAddr := net.JoinHostPort(web.IP.String(), "8080")
	serveIn(t, web.NS, webAddr)
	inForce := admitsOnly(webAddr, db, other)
	if err := rig.Eventually(30*time.Second, inForce); err != nil {
		t.Fatalf("policies not in force: %v", err)
	}

	var fresh *rig.Node
	apiServer.SetDown(true)
	restartWithPoliciesPending(t, nodes[1], nodes[0], db, web, inForce, "no view of the Kubernetes API", func() {
		// A node new to the fabric joins it too, but tells its runtime of
		// no network (no CNI config) while it can serve no pod.
		fresh = startKubeNode(t, r, apiServer, "node3", []string{"--dead-node-grace", "0s"}, nodes[0])
		waitNotReadyFor(t, fresh, 30*time.Second, "network policies not known yet")
		waitConverged(t, append(nodes, fresh))
		if _, err := os.Stat(filepath.Join(fresh.ConfDir, "10-loom.conflist")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("node3's CNI config before any view of the API: %v, want none", err)
		}
		// With no firewall of a last run to keep, it writes one: its
		// guards (VXLAN only from member nodes) are up all the same.
		if out := mustExec(t, fresh, "nft", "list", "set", "ip", "loom", "nodes"); !strings.Contains(out, nodes[0].Addr.String()) {
			t.Fatalf("node3's firewall before any view of the API:\n%s\nwant node1 among the member nodes", out)
		}
		// node2 keeps the firewall of its last run, but node3 is a member
		// node all the same: its VXLAN packets pass node2's guards.
		if err := rig.Eventually(15*time.Second, func() error { return rig.Ping(fresh.NS, overlayAddr(t, nodes[1])) }); err != nil {
			t.Fatalf("node3, joined while node2 keeps its last run's firewall, does not reach node2 over the overlay: %v", err)
		}
		// The firewall node3 wrote is its own: changed behind its back, it
		// is repaired, not kept.
		mustExec(t, fresh, "nft", "flush", "chain", "ip", "loom", "vxlan-ingress")
		if err := rig.Eventually(15*time.Second, func() error {
			if out := mustExec(t, fresh, "nft", "list", "chain", "ip", "loom", "vxlan-ingress"); !strings.Contains(out, "drop") {
				return fmt.Errorf("node3's VXLAN guard, flushed:\n%s", out)
			}
			return nil
		}); err != nil {
			t.Fatalf("not repaired while the policies are pending: %v", err)
		}
	})

	// node2's firewall removed while its policies are pending: nothing is
	// left to keep, so it isolates its pods, and says so.
	mustExec(t, nodes[1], "nft", "delete", "table", "ip", "loom")
	waitNotReadyFor(t, nodes[1], 15*time.Second, "every pod is isolated meanwhile")
	if err := rig.Eventually(15*time.Second, func() error {
		if dialFrom(db.NS, webAddr) == nil {
			return errors.New("db reaches web")
		}
		return nil
	}); err != nil {
		t.Fatalf("node2's pods, its firewall removed while its policies are pending: %v", err)
	}

	apiServer.SetDown(false)
	for _, n := range []*rig.Node{nodes[1], fresh} {
		if err := n.WaitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	attach(nodes[1], "late")
	if err := inForce(); err != nil {
		t.Fatalf("the API back: %v", err)
	}
}
