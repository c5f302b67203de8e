package overlay

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// Sets of Loom's table whose elements change without a table rewrite.
const (
	setNodes        = "nodes"
	setNodeOverlays = "node-overlays"
	// The host veths of this node's pods, and each veth paired with the
	// one source address it may carry.
	setPodVeths   = "pod-veths"
	setPodSources = "pod-sources"
)

func loomTable() *nftables.Table {
	return &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyIPv4}
}

func addrSets(t *nftables.Table) (nodes, overlays *nftables.Set) {
	return &nftables.Set{Table: t, Name: setNodes, KeyType: nftables.TypeIPAddr},
		&nftables.Set{Table: t, Name: setNodeOverlays, KeyType: nftables.TypeIPAddr}
}

// podSets names the anti-spoof sets. Interface names are strings, which
// nft keeps in host byte order; saying so makes `nft list` print them.
func podSets(t *nftables.Table) (veths, sources *nftables.Set) {
	return &nftables.Set{Table: t, Name: setPodVeths, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		&nftables.Set{Table: t, Name: setPodSources, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}
}

// podElements are a pod's entries in the anti-spoof sets.
func podElements(p PodRoute) (veth, source nftables.SetElement) {
	return nftables.SetElement{Key: ifname(p.HostIf)},
		nftables.SetElement{Key: append(ifname(p.HostIf), p.IP.AsSlice()...)}
}

// AddPod puts one pod into the anti-spoof sets of the table in force, so
// attaching a pod costs two set elements instead of a table rewrite; the
// next Apply with the same pods then finds nothing to do. Before the first
// Apply it does nothing: that Apply will carry the pod.
func (f *NFTables) AddPod(p PodRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.written {
		return nil
	}
	spec := f.spec
	spec.Pods = append(removePod(spec.Pods, p.HostIf), p)
	if spec.setsFingerprint() == f.setsFP {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if err := f.updateSets(c, spec); err != nil {
		// The sets are not what Loom thinks (the table was removed or
		// changed behind its back): write all of it.
		if werr := f.write(spec); werr != nil {
			return fmt.Errorf("add pod %s to anti-spoof sets: %w; rewriting the table: %w", p.HostIf, err, werr)
		}
	}
	return nil
}

// RemovePod forgets a pod whose host veth is being deleted, without
// touching the kernel: deleting a set element makes the nftables commit
// wait for an RCU grace period (tens of milliseconds, holding every other
// nftables change up), and an entry naming a veth that no longer exists
// matches nothing. Such stale entries are swept in one batch once
// staleSweep of them have gathered, or dropped by the next table write;
// one whose veth name comes back with another address is replaced.
func (f *NFTables) RemovePod(hostIf string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.written {
		return nil
	}
	for _, p := range f.spec.Pods {
		if p.HostIf == hostIf {
			f.stale[hostIf] = p
		}
	}
	f.spec.Pods = removePod(f.spec.Pods, hostIf)
	f.setsFP = f.spec.setsFingerprint()
	return nil
}

func removePod(pods []PodRoute, hostIf string) []PodRoute {
	out := make([]PodRoute, 0, len(pods))
	for _, p := range pods {
		if p.HostIf != hostIf {
			out = append(out, p)
		}
	}
	return out
}

// staleSweep is how many stale anti-spoof entries may gather before Apply
// deletes them, paying one grace period for all.
const staleSweep = 32

// sweepStale deletes the stale anti-spoof entries. Called with mu held.
func (f *NFTables) sweepStale(c *nftables.Conn) error {
	veths, sources := podSets(loomTable())
	var vs, srcs []nftables.SetElement
	for _, p := range f.stale {
		v, src := podElements(p)
		vs, srcs = append(vs, v), append(srcs, src)
	}
	if err := errors.Join(c.SetDeleteElements(veths, vs), c.SetDeleteElements(sources, srcs)); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete %d stale anti-spoof entries: %w", len(f.stale), err)
	}
	clear(f.stale)
	return nil
}

// setChange is one set's element changes.
type setChange struct {
	set      *nftables.Set
	add, del []nftables.SetElement
}

// updateSets changes the sets' elements from f.spec's to spec's in one
// batch; the rules must be the same (f.rulesFP stays). Called with mu held.
func (f *NFTables) updateSets(c *nftables.Conn, spec FirewallSpec) error {
	changes, stale := setChanges(f.spec, f.stale, spec)
	return f.changeSets(c, spec, changes, stale)
}

// changeSets makes changes, which take the sets from f.spec's elements
// to spec's, leaving stale entries, in one batch. Called with mu held.
func (f *NFTables) changeSets(c *nftables.Conn, spec FirewallSpec, changes []setChange, stale map[string]PodRoute) error {
	if err := commitChanges(c, changes); err != nil {
		return err
	}
	f.spec, f.stale, f.setsFP = spec, stale, spec.setsFingerprint()
	return nil
}

// commitChanges makes the changes in one batch.
func commitChanges(c *nftables.Conn, changes []setChange) error {
	for _, ch := range changes {
		if len(ch.del) > 0 {
			if err := c.SetDeleteElements(ch.set, ch.del); err != nil {
				return fmt.Errorf("delete elements of nftables set %s: %w", ch.set.Name, err)
			}
		}
		if len(ch.add) > 0 {
			if err := c.SetAddElements(ch.set, ch.add); err != nil {
				return fmt.Errorf("add elements to nftables set %s: %w", ch.set.Name, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables sets: %w", err)
	}
	return nil
}

// setChanges is what takes the sets from holding was (plus the stale pod
// entries) to holding want, and the stale entries after it: pods that left
// become stale (see RemovePod) rather than deleted.
func setChanges(was FirewallSpec, stale map[string]PodRoute, want FirewallSpec) ([]setChange, map[string]PodRoute) {
	t := loomTable()
	nodes, overlays := addrSets(t)
	veths, sources := podSets(t)
	vethChange, sourceChange := setChange{set: veths}, setChange{set: sources}
	old := map[string]PodRoute{}
	for _, p := range was.Pods {
		old[p.HostIf] = p
	}
	stale = maps.Clone(stale)
	for _, p := range want.Pods {
		prev, had := old[p.HostIf]
		delete(old, p.HostIf)
		if had && prev == p {
			continue
		}
		if s, ok := stale[p.HostIf]; ok {
			prev, had = s, true
			delete(stale, p.HostIf)
		}
		if had && prev != p {
			// The veth name is back with another address: the old
			// pairing must not outlive it.
			_, oldSrc := podElements(prev)
			sourceChange.del = append(sourceChange.del, oldSrc)
		}
		v, src := podElements(p)
		vethChange.add = append(vethChange.add, v)
		sourceChange.add = append(sourceChange.add, src)
	}
	for hostIf, p := range old {
		stale[hostIf] = p
	}
	changes := []setChange{
		addrChange(nodes, was.NodeAddrs, want.NodeAddrs, false),
		addrChange(overlays, was.NodeOverlays, want.NodeOverlays, false),
		vethChange, sourceChange,
	}
	changes = append(changes, policyElementChanges(t, was, want)...)
	if want.guardsIPv6() {
		changes = append(changes, addrChange(nodeSet6(), was.NodeAddrs, want.NodeAddrs, true))
	}
	return changes, stale
}

// addrChange is what turns set from holding was into holding want (the
// addresses of one family).
func addrChange(set *nftables.Set, was, want []netip.Addr, ipv6 bool) setChange {
	ch := setChange{set: set}
	had := map[netip.Addr]bool{}
	for _, e := range addrElements(was, ipv6) {
		a, _ := netip.AddrFromSlice(e.Key)
		had[a] = true
	}
	for _, e := range addrElements(want, ipv6) {
		a, _ := netip.AddrFromSlice(e.Key)
		if had[a] {
			delete(had, a)
			continue
		}
		ch.add = append(ch.add, e)
	}
	for a := range had {
		ch.del = append(ch.del, nftables.SetElement{Key: a.AsSlice()})
	}
	return ch
}
