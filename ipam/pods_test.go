package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestAllocateIsIdempotentUniqueAndRoundRobin(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	subnet := netip.MustParsePrefix("10.244.1.0/24")
	a1, existed, err := st.Allocate(subnet, Allocation{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", HostIf: "h1"})
	if err != nil || existed {
		t.Fatal(err, existed)
	}
	if a1.IP != netip.MustParseAddr("10.244.1.1") {
		t.Fatalf("first address = %s, want 10.244.1.1 (.0 is the node's)", a1.IP)
	}
	again, existed, _ := st.Allocate(subnet, Allocation{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", HostIf: "h1"})
	if again.IP != a1.IP || !existed {
		t.Fatalf("repeated ADD got %s, want the existing %s", again.IP, a1.IP)
	}
	a2, _, _ := st.Allocate(subnet, Allocation{ContainerID: "c2", IfName: "eth0", Netns: "", HostIf: "h2"})
	if a2.IP == a1.IP {
		t.Fatal("duplicate address")
	}
	if _, ok, _ := st.Release("c1", "eth0"); !ok {
		t.Fatal("release of existing allocation reported missing")
	}
	if _, ok, err := st.Release("c1", "eth0"); ok || err != nil {
		t.Fatalf("second release: ok=%v err=%v, want a quiet no-op", ok, err)
	}
	a3, _, _ := st.Allocate(subnet, Allocation{ContainerID: "c3", IfName: "eth0", Netns: "", HostIf: "h3"})
	if a3.IP == a1.IP {
		t.Fatalf("just-freed %s reused at once; want round-robin", a1.IP)
	}
}

func TestAllocateExhaustsAndPersists(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.244.1.0/29") // 6 pod addresses
	seen := map[netip.Addr]bool{}
	for i := 0; i < PodCapacity(subnet); i++ {
		a, _, err := st.Allocate(subnet, Allocation{ContainerID: fmt.Sprint("c", i), IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[a.IP] || a.IP == subnet.Addr() || a.IP == netip.MustParseAddr("10.244.1.7") {
			t.Fatalf("bad address %s", a.IP)
		}
		seen[a.IP] = true
	}
	if _, _, err := st.Allocate(subnet, Allocation{ContainerID: "one-too-many", IfName: "eth0", Netns: "", HostIf: ""}); !errors.Is(err, ErrSubnetExhausted) {
		t.Fatalf("err = %v, want ErrSubnetExhausted", err)
	}
	if err := st.SaveLease(OwnLease{Subnet: subnet, Epoch: 42, Owner: "node1"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	allocs, _ := st.Allocations()
	l, ok, _ := st.LoadLease()
	if len(allocs) != 6 || !ok || l.Epoch != 42 || l.Subnet != subnet || l.Owner != "node1" {
		t.Fatalf("after reopen: %d allocations, lease %+v (%v)", len(allocs), l, ok)
	}
}

// A second agent given the same --state-dir is refused and told the
// store is locked, rather than shown bbolt's bare timeout.
func TestOpenStoreRefusesSecondAgent(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = OpenStore(dir)
	if err == nil {
		t.Fatal("second OpenStore on the same dir succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second OpenStore of %s: %v; want it named as locked", dir, err)
	}
}

// A lease is reused only under the name it was claimed with; state written
// before the owner was recorded stays usable.
func TestOwnLeaseHeldByItsName(t *testing.T) {
	for _, tc := range []struct {
		owner, name string
		want        bool
	}{{"node1", "node1", true}, {"node1", "node2", false}, {"", "node2", true}} {
		if got := (OwnLease{Owner: tc.owner}).HeldBy(tc.name); got != tc.want {
			t.Errorf("lease of %q held by %q = %v, want %v", tc.owner, tc.name, got, tc.want)
		}
	}
}

// TestStartBootReleasesThePreviousBootsPods: the allocations of an earlier
// boot are released when the boot ID changes, kept across restarts of
// the same boot, and left alone when the boot ID is unknown.
func TestStartBootReleasesThePreviousBootsPods(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.244.1.0/24")
	if got, err := st.StartBoot("boot-1"); err != nil || got != nil {
		t.Fatalf("first boot recorded: released %v, %v; want nothing", got, err)
	}
	for _, c := range []string{"c1", "c2"} {
		if _, _, err := st.Allocate(subnet, Allocation{ContainerID: c, IfName: "eth0", HostIf: "h-" + c}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"boot-1", ""} {
		if got, err := st.StartBoot(id); err != nil || got != nil {
			t.Fatalf("StartBoot(%q) released %v, %v; want nothing", id, got, err)
		}
	}
	st.Close()
	if st, err = OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.StartBoot("boot-2")
	if err != nil || len(got) != 2 {
		t.Fatalf("after a reboot released %v, %v; want both allocations", got, err)
	}
	if left, _ := st.Allocations(); len(left) != 0 {
		t.Fatalf("allocations left after a reboot: %v", left)
	}
	if got, _ := st.StartBoot("boot-2"); got != nil {
		t.Fatalf("the same boot released %v again", got)
	}
}
