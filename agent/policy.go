package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
)

// Policy sources.
const (
	PolicySourceKubernetes = "kubernetes"
	PolicySourceFiles      = "files"
	PolicySourceNone       = "none"
)

// policyReloadInterval is how often the policy directory is checked for
// changes: well inside the 1 s in which a change must take effect.
const policyReloadInterval = 300 * time.Millisecond

// policyState is the agent's network-policy side: the objects in force,
// the last load error, the pod directory, and the last compiled result.
type policyState struct {
	source string
	dir    *policy.Directory

	// mu guards the fields below.
	mu   sync.Mutex
	objs policy.Objects
	// clusterPods are the pods of the Kubernetes source's last view;
	// addressesAwaited, that some have no address yet.
	clusterPods      []policy.Pod
	addressesAwaited bool
	loaded           bool
	loadErr          error
	loadedAt         time.Time
	compiled         *policy.Compiled
}

// enabled reports whether policies are enforced at all.
func (p *policyState) enabled() bool { return p.source != PolicySourceNone }

// pending reports whether the policies to enforce are not known yet: the
// Kubernetes source has sent no view since loomd started (the API server
// may be down), or the policy directory held no good set at the start.
// Meanwhile no pod is served, and the firewall the last run left stays
// (see pendingFirewall): its policies are better than none, or than
// isolating every pod, and a restart must not wait for them to rejoin the
// fabric (its peers would withdraw its pods' routes).
func (p *policyState) pending() bool {
	if !p.enabled() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.loaded
}

// pendingFirewall sets what d's firewall is while the policies are
// pending: the table the last run left, kept as it is but for its member
// nodes; without one (a new node, or its table removed meanwhile) the
// whole table, its guards up to date, with every local pod isolated,
// since nothing says what they may do.
func pendingFirewall(d *overlay.Desired) {
	d.KeepFirewall = true
	d.Policy = isolatingAll(d.Pods)
}

// isolatingAll is a policy that lets pods send and receive nothing.
func isolatingAll(pods []overlay.PodRoute) *policy.Compiled {
	c := &policy.Compiled{Pods: make([]policy.PodRules, 0, len(pods))}
	for _, p := range pods {
		c.Pods = append(c.Pods, policy.PodRules{IP: p.IP, HostIf: p.HostIf, Policies: []string{pendingPolicyName},
			Ingress: &policy.Direction{}, Egress: &policy.Direction{}})
	}
	slices.SortFunc(c.Pods, func(x, y policy.PodRules) int { return strings.Compare(x.HostIf, y.HostIf) })
	return c
}

// pendingPolicyName names what isolates pods while the policies are
// pending.
const pendingPolicyName = "(policies pending)"

// pendingPolicies says, while the policies are pending, why and what the
// firewall does meanwhile (see pendingFirewall).
func (a *Agent) pendingPolicies() string {
	held := "the firewall of the last run stays in force"
	if !a.fw.KeepsLastRun() {
		held = "every pod is isolated meanwhile"
	}
	return fmt.Sprintf("%v (%s)", a.policy.pendingError(), held)
}

// pendingError says why pods are not served while pending.
func (p *policyState) pendingError() error {
	if p.source == PolicySourceKubernetes {
		return errors.New("network policies not known yet: no view of the Kubernetes API since loomd started")
	}
	return errors.New("network policies not known yet: no good set in the policy directory since loomd started")
}

// lastLoadErr is why the last load of policies failed; nil if it did not.
func (p *policyState) lastLoadErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loadErr
}

// watchPolicyDir reloads the policy directory whenever its contents
// change. A bad file leaves the last good set in force; the error is
// logged once and shown in `loomctl policy`.
//
// loadedFrom is the fingerprint taken before the set in force was read
// (zero: nothing loaded yet): a change made while it was being read shows
// as a difference and is loaded again, never missed.
func (a *Agent) watchPolicyDir(ctx context.Context, loadedFrom [sha256.Size]byte) {
	dir := a.cfg.PolicyDir
	last := loadedFrom
	first := loadedFrom == [sha256.Size]byte{}
	t := time.NewTicker(policyReloadInterval)
	defer t.Stop()
	for {
		sum, err := policy.DirFingerprint(dir)
		if err == nil && (first || sum != last) {
			first, last = false, sum
			a.reloadPolicies(dir)
		} else if err != nil {
			a.policyLoaded(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) reloadPolicies(dir string) {
	objs, err := policy.LoadDir(dir)
	if err != nil {
		a.policyLoaded(err)
		return
	}
	a.policy.setObjects(objs, nil)
	a.policyLoaded(nil)
	a.log.Info("network policies loaded", zap.String("dir", dir), zap.Int("policies", len(objs.Policies)),
		zap.Int("namespaces", len(objs.Namespaces)))
	a.trigger()
}

// setObjects puts a policy set in force, with the cluster's pods when the
// source knows them (Kubernetes; nil for files).
func (p *policyState) setObjects(objs policy.Objects, clusterPods []policy.Pod) {
	waiting := slices.ContainsFunc(clusterPods, func(pod policy.Pod) bool { return !pod.IP.IsValid() })
	p.mu.Lock()
	p.objs, p.clusterPods, p.loaded, p.loadedAt = objs, clusterPods, true, time.Now()
	p.addressesAwaited = waiting
	p.mu.Unlock()
}

// readsPodDirectory reports whether other nodes' pod records change what
// is enforced: with policies from files, and with the Kubernetes source
// while the API has not said the address of some scheduled pod; never
// while the policies are pending (the firewall stays as it is).
func (p *policyState) readsPodDirectory() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.source {
	case PolicySourceFiles:
		return p.loaded
	case PolicySourceKubernetes:
		return p.addressesAwaited
	}
	return false
}

// policyLoaded records the outcome of reading the policy source: nil
// clears the last error; an error is logged and counted once, not on every
// attempt that fails the same way.
func (a *Agent) policyLoaded(err error) {
	p := a.policy
	p.mu.Lock()
	changed := newFailure(p.loadErr, err)
	p.loadErr = err
	p.mu.Unlock()
	if changed {
		a.log.Error("network policies not (all) loaded; the last good set stays in force", zap.Error(err))
		a.metrics.policyLoadErrors.Inc()
	}
}

// podRecords are the pod directory's records of local allocations.
func podRecords(allocs []ipam.Allocation) []policy.PodRecord {
	out := make([]policy.PodRecord, 0, len(allocs))
	for _, al := range allocs {
		out = append(out, podRecord(al))
	}
	return out
}

// podRecord is a local allocation as the pod directory and policies see it.
func podRecord(al ipam.Allocation) policy.PodRecord {
	ns := al.Namespace
	if ns == "" {
		ns = policy.DefaultNamespace
	}
	return policy.PodRecord{IP: al.IP, Namespace: ns, Name: al.Name, Labels: al.Labels, Since: al.Created.Unix(), UID: al.UID}
}

// compilePolicy publishes the local pods, allocs as read after the pod
// directory's mark listed, and compiles the policies in force against
// every pod this node can reach: its own and those of other nodes in
// subnets (see podSubnets). Called with dpMu held.
func (a *Agent) compilePolicy(allocs []ipam.Allocation, listed uint64, subnets map[string][]netip.Prefix) *policy.Compiled {
	p := a.policy
	records, localPods := podRecords(allocs), make([]policy.Pod, 0, len(allocs))
	for i, r := range records {
		pod := r.Pod()
		pod.HostIf = allocs[i].HostIf
		localPods = append(localPods, pod)
	}
	snap := a.filesPolicies()
	var pods iter.Seq[policy.Pod]
	if snap != nil {
		snap.Pods = localPods
		for pod := range p.dir.PodsIn(subnets) {
			snap.Pods = append(snap.Pods, pod)
		}
		pods = slices.Values(snap.Pods)
	}
	a.announcePods(p.dir.PublishChanges(records, listed), snap, pods)
	switch {
	case !p.enabled():
		return nil
	case p.source == PolicySourceKubernetes:
		return a.compileKubernetes(localPods, subnets)
	case snap == nil:
		// Nothing loaded yet (never a good file set): enforce nothing rather
		// than guess.
		return nil
	}
	return a.finishCompile(*snap)
}

// filesPolicies is the set of policies from files in force, as a
// snapshot without pods. Nil for another source, or before a good file
// set loaded.
func (a *Agent) filesPolicies() *policy.Snapshot {
	p := a.policy
	if p.source != PolicySourceFiles {
		return nil
	}
	p.mu.Lock()
	objs, loaded := p.objs, p.loaded
	p.mu.Unlock()
	if !loaded {
		return nil
	}
	return &policy.Snapshot{Policies: objs.Policies, Namespaces: objs.Namespaces}
}

// publishLocalPod publishes a local pod at once, one just given its
// address or new labels: the nodes whose policies select it as a peer
// (see policy.Watchers) then change their peer sets while its veth is
// still being made, before its first packet, which they would drop
// otherwise (and a dropped SYN is sent again only a second later); and a
// pod relabelled away from a peer selector leaves their sets as soon. The
// reconcile that follows publishes all local pods, this one the same.
// With the Kubernetes source, other nodes take the pod's address from its
// record until kubelet reports it (see policy.WithAddresses).
func (a *Agent) publishLocalPod(al ipam.Allocation) {
	if !a.policy.enabled() {
		return
	}
	// Not under dpMu: the ADD must not wait for a reconcile. One that read
	// the allocations before this pod's leaves its record alone (see
	// policy.Directory.Mark).
	a.announcePods(a.policy.dir.PublishPod(podRecord(al)), a.filesPolicies(), a.policy.dir.PodsIn(a.podSubnetsLast()))
}

// podSubnetsLast are the pod subnets of the last reconcile (nil before
// one).
func (a *Agent) podSubnetsLast() map[string][]netip.Prefix {
	if p := a.lastPodSubnets.Load(); p != nil {
		return *p
	}
	return nil
}

// A publish of a few pod records (a pod given its address, deleted or
// relabelled) sends them at once to the nodes whose policies name those
// pods (see policy.Watchers), up to directPodFanout nodes; larger
// publishes (a restart, a burst) and every other node wait for the
// gossip. Each update costs a datagram per node it is sent to.
const (
	directPodUpdatesAtMost = 8
	directPodFanout        = 32
)

// announcePods broadcasts what a publish of local pods changed, first to
// the nodes running pods whose policies are waiting for it: policies from
// files (snap, with the fabric's pods; nil: none), or the Kubernetes
// source's.
func (a *Agent) announcePods(published policy.Publication, snap *policy.Snapshot, pods iter.Seq[policy.Pod]) {
	var first []string
	if len(published.Updates) > 0 && len(published.Updates) <= directPodUpdatesAtMost {
		changed := make([]policy.Pod, 0, len(published.Pods))
		for _, r := range published.Pods {
			changed = append(changed, r.Pod())
		}
		switch {
		case snap != nil:
			first = policy.Watchers(*snap, changed, pods, directPodFanout)
		case a.policy.source == PolicySourceKubernetes:
			first = a.kubernetesWatchers(changed)
		}
	}
	a.members.BroadcastPods(published.Updates, first)
}

// kubernetesWatchers are the nodes whose policies from the Kubernetes
// source name one of this node's pods changed as a peer (see
// policy.Watchers): they wait for a new pod's record, which gives them
// its address before kubelet reports it. The records carry no labels
// under this source; the pods' objects in the view do, and changed
// takes theirs. The view says
// which node runs a pod only until the pod has an address; after, the
// peer whose pod subnet holds the address does.
func (a *Agent) kubernetesWatchers(changed []policy.Pod) []string {
	p := a.policy
	p.mu.Lock()
	objs, cluster := p.objs, p.clusterPods
	p.mu.Unlock()
	if len(objs.Policies) == 0 {
		return nil
	}
	type nsName struct{ ns, name string }
	mine := make(map[nsName]int, len(changed))
	for i, pod := range changed {
		mine[nsName{pod.Namespace, pod.Name}] = i
	}
	for _, pod := range cluster {
		if i, ok := mine[nsName{pod.Namespace, pod.Name}]; ok && (pod.Node == a.cfg.NodeName || pod.IP == changed[i].IP) {
			changed[i].Labels, changed[i].NamedPorts = pod.Labels, pod.NamedPorts
		}
	}
	holder := map[netip.Prefix]string{}
	var lengths []int
	for node, subnets := range a.podSubnetsLast() {
		for _, subnet := range subnets {
			holder[subnet] = node
			if !slices.Contains(lengths, subnet.Bits()) {
				lengths = append(lengths, subnet.Bits())
			}
		}
	}
	nodeOf := func(ip netip.Addr) string {
		for _, bits := range lengths {
			if subnet, err := ip.Prefix(bits); err == nil && holder[subnet] != "" {
				return holder[subnet]
			}
		}
		return ""
	}
	others := func(yield func(policy.Pod) bool) {
		for _, pod := range cluster {
			if pod.Node == "" {
				pod.Node = nodeOf(pod.IP)
			}
			if pod.Node != a.cfg.NodeName && !yield(pod) {
				return
			}
		}
	}
	snap := policy.Snapshot{Policies: objs.Policies, Namespaces: objs.Namespaces, NamedPortsKnown: true}
	return policy.Watchers(snap, changed, others, directPodFanout)
}

// policyOnly marks the reason of a reconcile of the policy alone in
// loom_reconcile_runs_total.
const policyOnly = " (policy only)"

// reconcilePolicy compiles the policies against the pods as they are and
// puts them in force, changing only the firewall's policy, for changes
// that touch nothing else: a pod just attached (its processes must not
// start before its rules; the reconcile its ADD asks for brings the rest
// along) and other nodes' pods coming and going. Those are the pods of
// the subnets of the last reconcile. Before the first reconcile has
// written the firewall it does nothing and reports false: only a whole
// reconcile will do.
func (a *Agent) reconcilePolicy(reason string) (bool, error) {
	if a.policy.pending() {
		return false, nil // only a whole reconcile knows what to keep
	}
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	start := time.Now()
	listed := a.policy.dir.Mark()
	allocs, err := a.store.Allocations()
	if err != nil {
		return false, fmt.Errorf("read pod allocations: %w", err)
	}
	applied, err := a.dp.ApplyPolicy(a.compilePolicy(allocs, listed, a.podSubnetsLast()))
	if applied {
		a.metrics.observeRun(reason+policyOnly, time.Since(start), err)
	}
	return applied, err
}

// compileKubernetes compiles the Kubernetes source's last view: its
// policies, namespaces and pods, with this node's attachments matched to
// their Pod objects, and the addresses the API does not say yet taken
// from the records other nodes in subnets published of their pods.
func (a *Agent) compileKubernetes(localPods []policy.Pod, subnets map[string][]netip.Prefix) *policy.Compiled {
	p := a.policy
	p.mu.Lock()
	objs, cluster := p.objs, p.clusterPods
	p.mu.Unlock()
	pods := policy.WithAddresses(policy.WithLocal(cluster, localPods), p.dir.PodsIn(subnets))
	return a.finishCompile(policy.Snapshot{Policies: objs.Policies, Namespaces: objs.Namespaces,
		Pods: pods, NamedPortsKnown: true})
}

// finishCompile compiles snap, keeps the result for loomctl policy and
// logs new warnings.
func (a *Agent) finishCompile(snap policy.Snapshot) *policy.Compiled {
	p := a.policy
	compiled := policy.Compile(snap)
	p.mu.Lock()
	old := p.compiled
	p.compiled = compiled
	p.mu.Unlock()
	if old == nil || !slices.Equal(old.Warnings, compiled.Warnings) {
		for _, w := range compiled.Warnings {
			a.log.Warn("network policy not enforced as written", zap.String("warning", w))
		}
	}
	return compiled
}

// policyStatus is what GET /v1/policy answers.
func (a *Agent) policyStatus() api.PolicyStatus {
	p := a.policy
	pending := p.pending()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := api.PolicyStatus{Source: p.source, Policies: []string{}, Pods: []api.PodPolicy{}, LoadedAt: p.loadedAt}
	if p.loadErr != nil {
		out.Error = p.loadErr.Error()
	}
	if pending {
		// What was compiled meanwhile has no policies: it is not what the
		// firewall enforces.
		out.Pending = a.pendingPolicies()
		return out
	}
	for _, pol := range p.objs.Policies {
		out.Policies = append(out.Policies, pol.Namespace+"/"+pol.Name)
	}
	sort.Strings(out.Policies)
	if p.compiled == nil {
		return out
	}
	out.Warnings = p.compiled.Warnings
	sets := map[string][]netip.Addr{}
	for _, s := range p.compiled.Sets {
		sets[s.Name] = s.Addrs
	}
	for _, pod := range p.compiled.Pods {
		pp := api.PodPolicy{Namespace: pod.Namespace, Name: pod.Name, IP: pod.IP.String(), Policies: pod.Policies,
			IngressIsolated: pod.Ingress != nil, EgressIsolated: pod.Egress != nil, Ingress: []string{}, Egress: []string{}}
		if pod.Ingress != nil {
			pp.Ingress = describeAllows(pod.Ingress.Allow, sets)
		}
		if pod.Egress != nil {
			pp.Egress = describeAllows(pod.Egress.Allow, sets)
		}
		out.Pods = append(out.Pods, pp)
	}
	return out
}

// describeAllows renders allow entries for people: the peer (set members
// spelled out), the ports, and the policy that allows it.
func describeAllows(allows []policy.Allow, sets map[string][]netip.Addr) []string {
	out := []string{}
	for _, al := range allows {
		peer := al.Peer.String()
		if al.Peer.Set != "" {
			peer = fmt.Sprint(sets[al.Peer.Set])
		}
		out = append(out, fmt.Sprintf("%s on %s (%s)", peer, al.PortsText(), al.Policy))
	}
	return out
}
