// Package gossip runs Loom's membership over hashicorp/memberlist: the node
// record each agent advertises, the delegates memberlist calls, and a peer
// table the agent reads to compute the data plane.
package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// MetaMaxSize is memberlist's limit on node metadata; a record that does not
// fit is an encoding error rather than memberlist's panic.
const MetaMaxSize = 512

// recordVersion is the first byte of an encoded node record. Decoders accept
// only versions they know, so a future incompatible layout is refused loudly.
const recordVersion = 1

// Field tags of the TLV encoding. New fields get new tags; decoders skip tags
// they do not know, so adding a field stays compatible with older agents.
const (
	tagName     = 1
	tagUnderlay = 2
	tagVTEPMAC  = 3
	tagSubnet   = 4
	tagEpoch    = 5
	tagVersion  = 6
	tagBackend  = 7
	tagLeaving  = 8
	tagWGKey    = 9
	tagTunnel   = 10
	tagVNI      = 11
	tagPodSpace = 12
	tagMTU      = 13
)

// MinMTU is the smallest pod MTU a node may run with or advertise.
const MinMTU = 576

// WGKeySize is the length of a WireGuard (Curve25519) public key.
const WGKeySize = 32

// ErrRecordTooLarge is returned when a record does not fit in MetaMaxSize.
var ErrRecordTooLarge = errors.New("node record larger than memberlist metadata limit")

// NodeRecord is what every agent advertises about itself in its memberlist
// metadata. Subnet is invalid (zero) until the node has claimed one.
type NodeRecord struct {
	Name         string
	Underlay     netip.Addr
	VTEPMAC      net.HardwareAddr
	Subnet       netip.Prefix
	LeaseEpoch   uint64
	AgentVersion string
	Backend      string
	// Leaving is set by a node about to leave the fabric on purpose, so
	// peers record a departure rather than a failure.
	Leaving bool
	// WGPublicKey is the node's WireGuard public key (WireGuard backend).
	WGPublicKey []byte
	// TunnelPort is the UDP port its data plane receives on (the VXLAN or
	// WireGuard port); 0 from agents that did not advertise it.
	TunnelPort uint16
	// VNI is its VXLAN network identifier; 0 when it runs no VXLAN or did
	// not advertise it.
	VNI uint32
	// Cluster is the fabric's pod address space as the node was given it
	// (--cluster-cidr) and SubnetBits the size of each node's subnet in it
	// (--subnet-prefix); zero from agents that did not advertise them.
	Cluster    netip.Prefix
	SubnetBits int
	// MTU is the node's pod MTU: the largest packet its underlay carries
	// to it once wrapped by the backend; 0 from agents that did not
	// advertise it.
	MTU int
}

// HasSubnet reports whether the node has claimed a pod subnet yet.
func (r NodeRecord) HasSubnet() bool { return r.Subnet.IsValid() }

// Encode returns the record in Loom's versioned TLV encoding.
func (r NodeRecord) Encode() ([]byte, error) {
	if r.Name == "" {
		return nil, errors.New("encode node record: empty name")
	}
	if !r.Underlay.IsValid() {
		return nil, fmt.Errorf("encode node record %q: no underlay address", r.Name)
	}
	if len(r.VTEPMAC) != 6 {
		return nil, fmt.Errorf("encode node record %q: VTEP MAC must be 6 bytes, got %d", r.Name, len(r.VTEPMAC))
	}
	buf := make([]byte, 0, 96)
	buf = append(buf, recordVersion)
	var err error
	add := func(tag byte, v []byte) {
		if err != nil {
			return
		}
		if len(v) > 255 {
			err = fmt.Errorf("encode node record %q: field %d is %d bytes, limit 255", r.Name, tag, len(v))
			return
		}
		buf = append(buf, tag, byte(len(v)))
		buf = append(buf, v...)
	}
	add(tagName, []byte(r.Name))
	add(tagUnderlay, r.Underlay.AsSlice())
	add(tagVTEPMAC, r.VTEPMAC)
	if r.Subnet.IsValid() {
		p := r.Subnet.Masked()
		add(tagSubnet, append(p.Addr().AsSlice(), byte(p.Bits())))
		add(tagEpoch, binary.BigEndian.AppendUint64(nil, r.LeaseEpoch))
	}
	if r.AgentVersion != "" {
		add(tagVersion, []byte(r.AgentVersion))
	}
	if r.Backend != "" {
		add(tagBackend, []byte(r.Backend))
	}
	if r.Leaving {
		add(tagLeaving, []byte{1})
	}
	if r.WGPublicKey != nil {
		if len(r.WGPublicKey) != WGKeySize {
			return nil, fmt.Errorf("encode node record %q: WireGuard key has %d bytes, want %d", r.Name, len(r.WGPublicKey), WGKeySize)
		}
		add(tagWGKey, r.WGPublicKey)
	}
	if r.TunnelPort != 0 {
		add(tagTunnel, binary.BigEndian.AppendUint16(nil, r.TunnelPort))
	}
	if r.VNI != 0 {
		add(tagVNI, binary.BigEndian.AppendUint32(nil, r.VNI))
	}
	if r.Cluster.IsValid() {
		if !r.Cluster.Addr().Is4() || r.SubnetBits <= r.Cluster.Bits() || r.SubnetBits > 32 {
			return nil, fmt.Errorf("encode node record %q: pod space %s with /%d subnets is not IPv4 with subnets inside it", r.Name, r.Cluster, r.SubnetBits)
		}
		add(tagPodSpace, append(r.Cluster.Addr().AsSlice(), byte(r.Cluster.Bits()), byte(r.SubnetBits)))
	}
	if r.MTU != 0 {
		if r.MTU < MinMTU || r.MTU > 65535 {
			return nil, fmt.Errorf("encode node record %q: MTU %d is outside %d..65535", r.Name, r.MTU, MinMTU)
		}
		add(tagMTU, binary.BigEndian.AppendUint16(nil, uint16(r.MTU)))
	}
	if err != nil {
		return nil, err
	}
	if len(buf) > MetaMaxSize {
		return nil, fmt.Errorf("encode node record %q: %d bytes: %w", r.Name, len(buf), ErrRecordTooLarge)
	}
	return buf, nil
}

// DecodeNodeRecord parses a record produced by Encode. It never panics on
// malformed input: every length is checked and the error names the problem.
func DecodeNodeRecord(b []byte) (NodeRecord, error) {
	var r NodeRecord
	if len(b) == 0 {
		return r, errors.New("decode node record: empty")
	}
	if len(b) > MetaMaxSize {
		return r, fmt.Errorf("decode node record: %d bytes: %w", len(b), ErrRecordTooLarge)
	}
	if b[0] != recordVersion {
		return r, fmt.Errorf("decode node record: unsupported version %d", b[0])
	}
	seen := map[byte]bool{}
	for i := 1; i < len(b); {
		if i+2 > len(b) {
			return r, fmt.Errorf("decode node record: truncated field header at byte %d", i)
		}
		tag, n := b[i], int(b[i+1])
		i += 2
		if i+n > len(b) {
			return r, fmt.Errorf("decode node record: field %d truncated (%d bytes, %d left)", tag, n, len(b)-i)
		}
		v := b[i : i+n]
		i += n
		if seen[tag] {
			return r, fmt.Errorf("decode node record: field %d repeated", tag)
		}
		seen[tag] = true
		switch tag {
		case tagName:
			r.Name = string(v)
		case tagUnderlay:
			a, ok := netip.AddrFromSlice(v)
			if !ok {
				return r, fmt.Errorf("decode node record: underlay address has %d bytes", n)
			}
			r.Underlay = a.Unmap()
		case tagVTEPMAC:
			if n != 6 {
				return r, fmt.Errorf("decode node record: VTEP MAC has %d bytes, want 6", n)
			}
			r.VTEPMAC = net.HardwareAddr(append([]byte(nil), v...))
		case tagSubnet:
			if n != 5 && n != 17 {
				return r, fmt.Errorf("decode node record: subnet has %d bytes", n)
			}
			a, _ := netip.AddrFromSlice(v[:n-1])
			p, err := a.Prefix(int(v[n-1]))
			if err != nil {
				return r, fmt.Errorf("decode node record: subnet: %w", err)
			}
			if p.Addr() != a {
				return r, fmt.Errorf("decode node record: subnet %s/%d has host bits set", a, v[n-1])
			}
			r.Subnet = p
		case tagEpoch:
			if n != 8 {
				return r, fmt.Errorf("decode node record: lease epoch has %d bytes, want 8", n)
			}
			r.LeaseEpoch = binary.BigEndian.Uint64(v)
		case tagVersion:
			r.AgentVersion = string(v)
		case tagBackend:
			r.Backend = string(v)
		case tagLeaving:
			if n != 1 || v[0] > 1 {
				return r, fmt.Errorf("decode node record: leaving flag malformed")
			}
			r.Leaving = v[0] == 1
		case tagWGKey:
			if n != WGKeySize {
				return r, fmt.Errorf("decode node record: WireGuard key has %d bytes, want %d", n, WGKeySize)
			}
			r.WGPublicKey = append([]byte(nil), v...)
		case tagTunnel:
			if n != 2 {
				return r, fmt.Errorf("decode node record: tunnel port has %d bytes, want 2", n)
			}
			r.TunnelPort = binary.BigEndian.Uint16(v)
		case tagVNI:
			if n != 4 {
				return r, fmt.Errorf("decode node record: VNI has %d bytes, want 4", n)
			}
			r.VNI = binary.BigEndian.Uint32(v)
		case tagPodSpace:
			if n != 6 {
				return r, fmt.Errorf("decode node record: pod space has %d bytes, want 6", n)
			}
			a, _ := netip.AddrFromSlice(v[:4])
			p, err := a.Prefix(int(v[4]))
			if err != nil || p.Addr() != a || int(v[5]) <= p.Bits() || v[5] > 32 {
				return r, fmt.Errorf("decode node record: pod space %s/%d with /%d subnets is malformed", a, v[4], v[5])
			}
			r.Cluster, r.SubnetBits = p, int(v[5])
		case tagMTU:
			if n != 2 {
				return r, fmt.Errorf("decode node record: MTU has %d bytes, want 2", n)
			}
			if r.MTU = int(binary.BigEndian.Uint16(v)); r.MTU < MinMTU {
				return r, fmt.Errorf("decode node record: MTU %d is below %d", r.MTU, MinMTU)
			}
		}
	}
	switch {
	case r.Name == "":
		return r, errors.New("decode node record: missing name")
	case !r.Underlay.IsValid():
		return r, fmt.Errorf("decode node record %q: missing underlay address", r.Name)
	case r.VTEPMAC == nil:
		return r, fmt.Errorf("decode node record %q: missing VTEP MAC", r.Name)
	}
	if r.VTEPMAC[0]&1 == 1 {
		return r, fmt.Errorf("decode node record %q: VTEP MAC %s is multicast", r.Name, r.VTEPMAC)
	}
	return r, nil
}
