package gossip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func sampleRecord() NodeRecord {
	return NodeRecord{
		Name: "node-1", Underlay: netip.MustParseAddr("192.0.2.10"),
		VTEPMAC: net.HardwareAddr{0x0e, 1, 2, 3, 4, 5}, Subnet: netip.MustParsePrefix("10.244.7.0/24"),
		LeaseEpoch: 1234567890123, AgentVersion: "v1.2.3", Backend: "vxlan", Leaving: true,
		TunnelPort: 4789, VNI: 1 << 23,
		Cluster: netip.MustParsePrefix("10.244.0.0/16"), SubnetBits: 24, MTU: 8950,
	}
}

func TestNodeRecordRoundTrip(t *testing.T) {
	for _, r := range []NodeRecord{sampleRecord(), func() NodeRecord { r := sampleRecord(); r.Subnet = netip.Prefix{}; r.LeaseEpoch = 0; return r }()} {
		b, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeNodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestNodeRecordFitsMetadataAndRefusesOversize(t *testing.T) {
	r := sampleRecord()
	r.Name = strings.Repeat("n", 64)
	r.WGPublicKey = bytes.Repeat([]byte{7}, WGKeySize)
	b, err := r.Encode()
	if err != nil || len(b) > 192 {
		t.Fatalf("realistic record is %d bytes (err %v); it must stay far below %d", len(b), err, MetaMaxSize)
	}
	r.AgentVersion = strings.Repeat("v", 255)
	r.Backend = strings.Repeat("b", 255)
	if _, err := r.Encode(); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("oversize record: err = %v, want ErrRecordTooLarge", err)
	}
}

func TestDecodeNodeRecordRejectsMalformed(t *testing.T) {
	good, _ := sampleRecord().Encode()
	cases := map[string][]byte{
		"empty":            {},
		"bad version":      append([]byte{9}, good[1:]...),
		"truncated":        good[:len(good)-1],
		"header only":      {recordVersion, tagName},
		"missing name":     {recordVersion, tagUnderlay, 4, 192, 0, 2, 1},
		"bad mac length":   {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 2, 1, 2},
		"bad tunnel port":  {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagTunnel, 1, 7},
		"bad vni":          {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagVNI, 3, 0, 0, 1},
		"multicast mac":    {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 1, 0, 0, 0, 0, 1},
		"host bits subnet": {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagSubnet, 5, 10, 244, 1, 1, 24},
		"repeated field":   {recordVersion, tagName, 1, 'a', tagName, 1, 'b'},
		"pod space length": {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagPodSpace, 5, 10, 244, 0, 0, 16},
		"pod space bits":   {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagPodSpace, 6, 10, 244, 0, 0, 16, 16},
		"pod space host":   {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagPodSpace, 6, 10, 244, 1, 0, 16, 24},
		"mtu length":       {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagMTU, 1, 200},
		"mtu too small":    {recordVersion, tagName, 1, 'a', tagUnderlay, 4, 192, 0, 2, 1, tagVTEPMAC, 6, 2, 0, 0, 0, 0, 1, tagMTU, 2, 0, 200},
		"oversize":         bytes.Repeat([]byte{1}, MetaMaxSize+1),
	}
	for name, b := range cases {
		if _, err := DecodeNodeRecord(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestDecodeNodeRecordSkipsUnknownFields(t *testing.T) {
	good, _ := sampleRecord().Encode()
	withExtra := append(append([]byte(nil), good...), 200, 3, 'x', 'y', 'z')
	got, err := DecodeNodeRecord(withExtra)
	if err != nil || got.Name != "node-1" {
		t.Fatalf("unknown field broke decoding: %v", err)
	}
}

func TestNodeRecordWireGuardKey(t *testing.T) {
	r := sampleRecord()
	r.Backend = "wireguard"
	r.WGPublicKey = bytes.Repeat([]byte{7}, WGKeySize)
	// The key is then the last field, which the short-key case below cuts.
	r.TunnelPort, r.VNI, r.Cluster, r.MTU = 0, 0, netip.Prefix{}, 0
	enc, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeNodeRecord(enc)
	if err != nil || !bytes.Equal(got.WGPublicKey, r.WGPublicKey) || got.Backend != "wireguard" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	r.WGPublicKey = r.WGPublicKey[:31]
	if _, err := r.Encode(); err == nil {
		t.Fatal("a 31-byte key was encoded")
	}
	short := append(append([]byte(nil), enc[:len(enc)-WGKeySize-2]...), tagWGKey, 3, 1, 2, 3)
	if _, err := DecodeNodeRecord(short); err == nil || !strings.Contains(err.Error(), "WireGuard key has 3 bytes") {
		t.Fatalf("short key: err = %v", err)
	}
}

func FuzzDecodeNodeRecord(f *testing.F) {
	good, _ := sampleRecord().Encode()
	f.Add(good)
	wg := sampleRecord()
	wg.Backend, wg.WGPublicKey = "wireguard", bytes.Repeat([]byte{9}, WGKeySize)
	if enc, err := wg.Encode(); err == nil {
		f.Add(enc)
	}
	f.Add([]byte{recordVersion})
	f.Add([]byte{recordVersion, tagSubnet, 17})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeNodeRecord(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same record.
		enc, err := r.Encode()
		if err != nil {
			return
		}
		r2, err := DecodeNodeRecord(enc)
		if err != nil || r2.Name != r.Name || r2.Subnet != r.Subnet || r2.Underlay != r.Underlay || !bytes.Equal(r2.WGPublicKey, r.WGPublicKey) {
			t.Fatalf("re-decode mismatch: %+v vs %+v (%v)", r, r2, err)
		}
	})
}
