package ipam

import (
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"
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
	st = reopen(t, st)
	got, err := st.LoadHolders()
	if err != nil || !maps.Equal(got, holders) {
		t.Fatalf("holders after reopening: %v, %v; want %v", got, err, holders)
	}
	peers, err := st.LoadPeers()
	if err != nil || len(peers) != 2 || peers[1] != "fd00::2" {
		t.Fatalf("peers after reopening: %v, %v", peers, err)
	}
}

// Other nodes' pod records outlive the process; a save writes and
// deletes only the keys it names.
func TestStoreRemembersPodDirectory(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.LoadDirectory(); err != nil || len(got) != 0 {
		t.Fatalf("fresh store: %v, %v; want no records", got, err)
	}
	if err := st.SaveDirectory(map[string][]byte{"10.244.1.2 a": []byte(`{"v":1}`), "10.244.1.3 a": []byte(`{"v":2}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveDirectory(map[string][]byte{"10.244.2.2 b": []byte(`{"v":3}`)}, []string{"10.244.1.3 a", "never saved"}); err != nil {
		t.Fatal(err)
	}
	st = reopen(t, st)
	got, err := st.LoadDirectory()
	want := map[string][]byte{"10.244.1.2 a": []byte(`{"v":1}`), "10.244.2.2 b": []byte(`{"v":3}`)}
	if err != nil || !maps.EqualFunc(got, want, func(x, y []byte) bool { return string(x) == string(y) }) {
		t.Fatalf("after reopening: %q, %v; want %q", got, err, want)
	}
}

// reopen closes st and opens its database again, as the next run of
// loomd would; the test's end closes it.
func reopen(t *testing.T, st *Store) *Store {
	t.Helper()
	st.Close()
	st, err := OpenStore(filepath.Dir(st.Path()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// The lease table outlives the process.
func TestStoreRemembersClaims(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := st.LoadClaims(); err != nil || ok {
		t.Fatalf("fresh store: claims %v, %v; want none", got, err)
	}
	claims := []Claim{
		{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Owner: "node1", Epoch: 1, Version: 1, State: LeaseActive},
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Owner: "node2", Epoch: 2, Version: 3, State: LeaseReserved, Expires: 1000},
	}
	at := time.Unix(1700000000, 0)
	if err := st.SaveClaims(SavedClaims{At: at, Claims: claims}); err != nil {
		t.Fatal(err)
	}
	st = reopen(t, st)
	if got, ok, err := st.LoadClaims(); err != nil || !ok || !got.At.Equal(at) || !slices.Equal(got.Claims, claims) {
		t.Fatalf("claims after reopening: %v, %v; want %v at %v", got, err, claims, at)
	}
}
