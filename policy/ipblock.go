package policy

import (
	"fmt"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
)

// blockPrefixes returns the IPv4 prefixes an ipBlock covers: its CIDR with
// every except carved out, as disjoint prefixes in address order.
func blockPrefixes(b *networkingv1.IPBlock) ([]netip.Prefix, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr %q: %w", b.CIDR, err)
	}
	if !cidr.Addr().Is4() {
		return nil, fmt.Errorf("ipBlock cidr %q: only IPv4 is supported", b.CIDR)
	}
	out := []netip.Prefix{cidr.Masked()}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except %q: %w", e, err)
		}
		ex = ex.Masked()
		var next []netip.Prefix
		for _, p := range out {
			next = append(next, subtract(p, ex)...)
		}
		out = next
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out, nil
}

// subtract returns p without ex, as at most 32 prefixes.
func subtract(p, ex netip.Prefix) []netip.Prefix {
	switch {
	case !p.Overlaps(ex):
		return []netip.Prefix{p}
	case ex.Bits() <= p.Bits():
		return nil // ex covers p
	}
	// Split p into its two halves and keep what lies outside ex.
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hiAddr := p.Addr().As4()
	bit := p.Bits()
	hiAddr[bit/8] |= 0x80 >> (bit % 8)
	hi := netip.PrefixFrom(netip.AddrFrom4(hiAddr), p.Bits()+1)
	return append(subtract(lo, ex), subtract(hi, ex)...)
}
