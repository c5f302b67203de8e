package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/loomnet/loom/policy"
	"golang.org/x/sys/unix"
)

// ChainPolicy is the chain of network policy, which the forward chain
// jumps to: every packet of an established flow passes, the rest jumps to
// the chain of the pod it leaves (egress) or enters (ingress).
const ChainPolicy = "policy"

// Prefixes of the per-pod chains and of the peer address sets.
const (
	policyIngressPrefix = "pol-in-"
	policyEgressPrefix  = "pol-eg-"
	policySetPrefix     = "pol-"
)

// policyChain is one verdict chain: pods whose rules in a direction are
// the same share it, so the table grows with the number of distinct rule
// sets, not with pods × policies.
type policyChain struct {
	name string
	dir  *policy.Direction
	// peerOffset is where the peer's address is in the IPv4 header: the
	// destination for egress, the source for ingress.
	peerOffset uint32
}

// policyLayout names the chain of each pod and direction.
type policyLayout struct {
	chains  []policyChain
	ingress map[string]string // host veth → chain
	egress  map[string]string
}

// layoutPolicy lays a compiled policy set out in chains and verdict maps;
// nil has none.
func layoutPolicy(c *policy.Compiled) policyLayout {
	l := policyLayout{ingress: map[string]string{}, egress: map[string]string{}}
	if c == nil {
		return l
	}
	seen := map[string]bool{}
	var b strings.Builder
	// Pods with the same rules mostly share them (see policy.Compile):
	// each shared direction is hashed once.
	type direction struct {
		prefix string
		rules  *policy.Direction
	}
	named := map[direction]string{}
	add := func(prefix string, offset uint32, d *policy.Direction) string {
		if name, ok := named[direction{prefix, d}]; ok {
			return name
		}
		// What fmt would print for "%s|%v|%s;" of peer, ports and
		// policy, written without it: a reconcile names a chain for each
		// local pod, and fmt's reflection was most of laying them out.
		b.Reset()
		for _, a := range d.Allow {
			b.WriteString(a.Peer.String())
			b.WriteString("|[")
			for i, r := range a.Ports {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(r.String())
			}
			b.WriteString("]|")
			b.WriteString(a.Policy)
			b.WriteByte(';')
		}
		sum := sha256.Sum256([]byte(b.String()))
		name := prefix + hex.EncodeToString(sum[:8])
		if !seen[name] {
			seen[name] = true
			l.chains = append(l.chains, policyChain{name: name, dir: d, peerOffset: offset})
		}
		named[direction{prefix, d}] = name
		return name
	}
	for _, p := range c.Pods {
		if p.Egress != nil {
			l.egress[p.HostIf] = add(policyEgressPrefix, 16, p.Egress)
		}
		if p.Ingress != nil {
			l.ingress[p.HostIf] = add(policyIngressPrefix, 12, p.Ingress)
		}
	}
	return l
}

// addPolicy programs compiled network policy: ingress is enforced on the
// node of the destination pod (packets leaving through its host veth),
// egress on the node of the source pod (packets arriving from its host
// veth). Replies of allowed flows pass on conntrack state, so a policy
// change never cuts an established connection. It returns the names of
// the verdict chains, whose last rule counts drops.
func addPolicy(c *nftables.Conn, t *nftables.Table, compiled *policy.Compiled, layout policyLayout) ([]string, error) {
	sets := map[string]*nftables.Set{}
	for _, s := range compiled.Sets {
		set := policyPeerSet(t, s.Name)
		if err := c.AddSet(set, addrElements(s.Addrs, false)); err != nil {
			return nil, fmt.Errorf("build nftables set %s: %w", set.Name, err)
		}
		sets[s.Name] = set
	}
	base := c.AddChain(&nftables.Chain{Name: ChainPolicy, Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: append(ctEstablishedOrRelated(), &expr.Verdict{Kind: expr.VerdictAccept})})
	names := make([]string, 0, len(layout.chains))
	for _, pc := range layout.chains {
		names = append(names, pc.name)
		ch := c.AddChain(&nftables.Chain{Name: pc.name, Table: t})
		for _, a := range pc.dir.Allow {
			for _, peer := range peerMatches(a.Peer, pc.peerOffset, sets) {
				for _, ports := range portMatches(a.Ports) {
					e := append(append([]expr.Any{}, peer...), ports...)
					e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e, UserData: []byte(a.Policy)})
				}
			}
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}})
	}
	// One verdict-map lookup per direction sends a packet to its pod's
	// chain, however many pods are isolated.
	for _, m := range []struct {
		name   string
		ifKey  expr.MetaKey
		chains map[string]string
	}{{policyEgressMap, expr.MetaKeyIIFNAME, layout.egress}, {policyIngressMap, expr.MetaKeyOIFNAME, layout.ingress}} {
		vmap := policyVerdictMap(t, m.name)
		elems := make([]nftables.SetElement, 0, len(m.chains))
		for hostIf, chain := range m.chains {
			elems = append(elems, jumpElement(hostIf, chain))
		}
		if err := c.AddSet(vmap, elems); err != nil {
			return nil, fmt.Errorf("build nftables map %s: %w", m.name, err)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
			&expr.Meta{Key: m.ifKey, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: vmap.Name, SetID: vmap.ID, DestRegister: 0, IsDestRegSet: true},
		}})
	}
	return names, nil
}

// peerMatches returns one match per alternative: the set lookup, each
// prefix, or (any peer) a single empty match.
func peerMatches(p policy.Peer, offset uint32, sets map[string]*nftables.Set) [][]expr.Any {
	if p.Any() {
		return [][]expr.Any{nil}
	}
	if p.Set != "" {
		set := sets[p.Set]
		if set == nil {
			return nil // compiled output always names its sets; match nothing if not
		}
		return [][]expr.Any{{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		}}
	}
	out := make([][]expr.Any, 0, len(p.Prefixes))
	for _, pf := range p.Prefixes {
		out = append(out, matchPrefix(offset, pf, false))
	}
	return out
}

// portMatches returns one match per port range (all ports: one empty match).
func portMatches(ports []policy.PortRange) [][]expr.Any {
	if len(ports) == 0 {
		return [][]expr.Any{nil}
	}
	out := make([][]expr.Any, 0, len(ports))
	for _, r := range ports {
		out = append(out, portMatch(r))
	}
	return out
}

// portMatch matches a protocol and, unless Port is 0, a destination port
// or inclusive range.
func portMatch(r policy.PortRange) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4proto(r.Protocol)}},
	}
	if r.Port != 0 {
		// TCP, UDP and SCTP all carry the destination port at offset 2.
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		from := binary.BigEndian.AppendUint16(nil, r.Port)
		if r.EndPort > r.Port {
			e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: from, ToData: binary.BigEndian.AppendUint16(nil, r.EndPort)})
		} else {
			e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: from})
		}
	}
	return e
}

func l4proto(p string) byte {
	switch strings.ToUpper(p) {
	case "UDP":
		return unix.IPPROTO_UDP
	case "SCTP":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// The verdict maps that send a packet to its pod's chain, by the veth it
// comes in by (egress) or goes out by (ingress).
const (
	policyEgressMap  = "policy-egress"
	policyIngressMap = "policy-ingress"
)

// policyVerdictMap is one of the verdict maps, pod veth → chain. Its keys
// are interface names, in host byte order as the pod sets' (see podSets),
// so that `nft list` prints which veth uses which chain.
func policyVerdictMap(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
}

// jumpElement sends the packets of a pod veth to its chain.
func jumpElement(hostIf, chain string) nftables.SetElement {
	return nftables.SetElement{Key: ifname(hostIf), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// policyPeerSet is the nftables set of a compiled peer set's addresses.
func policyPeerSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: policySetPrefix + name, KeyType: nftables.TypeIPAddr}
}

// policyRulesFingerprint identifies what of a compiled policy set is
// rules: the peer sets, by name, and the verdict chains, each named by the
// hash of its rules (see layoutPolicy). The rest is elements: which pod
// veth jumps to which chain, and the peer sets' addresses (see
// policyElementChanges). Pods coming, going or relabelled, here or on other
// nodes, change only elements unless a rule set appears or goes, so they
// need no table rewrite: in a large fabric the rewrite carries every
// policy's sets and chains.
func policyRulesFingerprint(c *policy.Compiled, layout policyLayout) string {
	if c == nil {
		return "policy=off"
	}
	var b strings.Builder
	for _, s := range c.Sets {
		b.WriteString("set ")
		b.WriteString(s.Name)
		b.WriteByte(';')
	}
	names := make([]string, len(layout.chains))
	for i, ch := range layout.chains {
		names[i] = ch.name
	}
	slices.Sort(names)
	for _, name := range names {
		b.WriteString("chain ")
		b.WriteString(name)
		b.WriteByte(';')
	}
	return b.String()
}

// policyElementChanges is what turns the policy elements of was into
// those of want, whose rules are the same (so are the sets' and chains'
// names): peer set addresses, and the verdict maps' veth → chain entries.
// None means the policy in force is want's already.
func policyElementChanges(t *nftables.Table, was, want FirewallSpec) []setChange {
	if want.Policy == nil || was.Policy == want.Policy {
		return nil
	}
	held := map[string][]netip.Addr{}
	if was.Policy != nil {
		for _, s := range was.Policy.Sets {
			held[s.Name] = s.Addrs
		}
	}
	var changes []setChange
	for _, s := range want.Policy.Sets {
		if slices.Equal(held[s.Name], s.Addrs) {
			continue
		}
		changes = append(changes, addrChange(policyPeerSet(t, s.Name), held[s.Name], s.Addrs, false))
	}
	wasLayout, wantLayout := was.policyLayout(), want.policyLayout()
	for _, m := range []struct {
		set       *nftables.Set
		was, want map[string]string
	}{
		{policyVerdictMap(t, policyEgressMap), wasLayout.egress, wantLayout.egress},
		{policyVerdictMap(t, policyIngressMap), wasLayout.ingress, wantLayout.ingress},
	} {
		ch := setChange{set: m.set}
		for hostIf, chain := range m.was {
			if m.want[hostIf] != chain {
				ch.del = append(ch.del, nftables.SetElement{Key: ifname(hostIf)})
			}
		}
		for hostIf, chain := range m.want {
			if m.was[hostIf] != chain {
				ch.add = append(ch.add, jumpElement(hostIf, chain))
			}
		}
		if len(ch.add)+len(ch.del) > 0 {
			changes = append(changes, ch)
		}
	}
	return changes
}
