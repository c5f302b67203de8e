package bench

import (
	"math"
	"testing"
)

func TestCategorise(t *testing.T) {
	report := []byte(`# Samples: 1K of event 'cpu-clock'
#
    11.25%  [k] _copy_from_iter
     2.00%  [k] nft_do_chain
     1.00%  [k] __nf_conntrack_find_get
     0.75%  [k] vxlan_xmit_one
     5.00%  [k] pv_native_safe_halt
     3.00%  [.] runtime.mallocgc
not a sample line
`)
	got := categorise(report)
	want := map[string]float64{
		"netfilter (nftables, conntrack, bridge netfilter)": 3,
		"VXLAN and UDP tunnel":                              0.75,
		"copying data (send and receive)":                   11.25,
		"idle":                                              5,
		"other":                                             3,
	}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-9 {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("categories %v, want %v", got, want)
	}
}
