package ipam

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
)

// MaxSubnets bounds how many node subnets a cluster CIDR may be cut into, so
// rendezvous ordering stays cheap.
const MaxSubnets = 1 << 16

// SubnetSpace is the cluster CIDR cut into equal node subnets.
type SubnetSpace struct {
	Cluster netip.Prefix
	Bits    int
}

// NewSubnetSpace validates the cluster CIDR and node subnet size.
func NewSubnetSpace(cluster netip.Prefix, bits int) (SubnetSpace, error) {
	if !cluster.IsValid() || !cluster.Addr().Is4() {
		return SubnetSpace{}, fmt.Errorf("cluster CIDR %s is not an IPv4 network", cluster)
	}
	if cluster.Masked() != cluster {
		return SubnetSpace{}, fmt.Errorf("cluster CIDR %s has host bits set (did you mean %s?)", cluster, cluster.Masked())
	}
	if bits <= cluster.Bits() || bits > 30 {
		return SubnetSpace{}, fmt.Errorf("subnet prefix /%d must be longer than the cluster prefix /%d and at most /30", bits, cluster.Bits())
	}
	if bits-cluster.Bits() > 16 {
		return SubnetSpace{}, fmt.Errorf("cluster CIDR %s cut into /%d gives %d subnets, more than %d", cluster, bits, 1<<(bits-cluster.Bits()), MaxSubnets)
	}
	return SubnetSpace{Cluster: cluster, Bits: bits}, nil
}

// Count is the number of node subnets.
func (s SubnetSpace) Count() int { return 1 << (s.Bits - s.Cluster.Bits()) }

// Nth returns the i-th node subnet.
func (s SubnetSpace) Nth(i int) netip.Prefix {
	base := binary.BigEndian.Uint32(s.Cluster.Addr().AsSlice())
	a := base + uint32(i)<<(32-s.Bits)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.PrefixFrom(netip.AddrFrom4(b), s.Bits)
}

// Check reports whether p is one of the space's node subnets.
func (s SubnetSpace) Check(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid subnet")
	}
	if p.Bits() != s.Bits {
		return fmt.Errorf("subnet %s is not a /%d", p, s.Bits)
	}
	if p.Masked() != p {
		return fmt.Errorf("subnet %s has host bits set", p)
	}
	if !s.Cluster.Contains(p.Addr()) {
		return fmt.Errorf("subnet %s is outside cluster CIDR %s", p, s.Cluster)
	}
	return nil
}

// RendezvousOrder returns every node subnet ordered by the highest-random-
// weight hash of (node, subnet): each node has its own stable preference, so
// nodes claiming at once, even on two sides of a partition, rarely collide.
func (s SubnetSpace) RendezvousOrder(node string) []netip.Prefix {
	type scored struct {
		p     netip.Prefix
		score uint64
	}
	n := s.Count()
	all := make([]scored, n)
	for i := 0; i < n; i++ {
		p := s.Nth(i)
		h := fnv.New64a()
		h.Write([]byte(node))
		h.Write([]byte{0})
		h.Write(p.Addr().AsSlice())
		all[i] = scored{p, mix64(h.Sum64())}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].p.Addr().Less(all[j].p.Addr())
	})
	out := make([]netip.Prefix, n)
	for i, sc := range all {
		out[i] = sc.p
	}
	return out
}

// mix64 is a finaliser (splitmix64) that spreads FNV's weak low bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
