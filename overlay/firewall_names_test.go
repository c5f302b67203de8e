package overlay

import (
	"fmt"
	"testing"

	"github.com/loomnet/loom/api"
)

// TestPodVethNameRange: the anti-spoof rule's name pre-filter lets every
// pod veth through to the set lookups and keeps the overlay devices out.
func TestPodVethNameRange(t *testing.T) {
	in := func(name string) bool {
		b := ifname(name)[:len(podVethRangeFrom)]
		return string(b) >= podVethRangeFrom && string(b) <= podVethRangeTo
	}
	for i := range 2000 {
		if name := api.HostVethName(fmt.Sprintf("container-%d", i), "eth0"); !in(name) {
			t.Fatalf("pod veth %s falls outside the pre-filter", name)
		}
	}
	for _, name := range []string{DeviceName(1), DeviceName(4096), WireGuardDevice, "eth0", "lo", "loom"} {
		if in(name) {
			t.Errorf("%s passes the pod veth pre-filter", name)
		}
	}
}
