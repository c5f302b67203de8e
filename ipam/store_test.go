package ipam

import (
	"maps"
	"net/netip"
	"testing"
)

// The subnets' holders and the peers outlive the process, and a store
// that never had them reads none.
func TestStoreRemembersHoldersAndPeers(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := st.LoadHolders(); err != nil || h != nil {
		t.Fatalf("fresh store: holders %v, %v; want none", h, err)
	}
	holders := map[netip.Prefix]string{
		netip.MustParsePrefix("10.244.1.0/24"): "node1",
		netip.MustParsePrefix("10.244.2.0/24"): "node2",
	}
	if err := st.SaveHolders(holders); err != nil {
		t.Fatal(err)
	}
	if err := st.SavePeers([]string{"192.0.2.1", "fd00::2"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if st, err = OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.LoadHolders()
	if err != nil || !maps.Equal(got, holders) {
		t.Fatalf("holders after reopening: %v, %v; want %v", got, err, holders)
	}
	peers, err := st.LoadPeers()
	if err != nil || len(peers) != 2 || peers[1] != "fd00::2" {
		t.Fatalf("peers after reopening: %v, %v", peers, err)
	}
}
