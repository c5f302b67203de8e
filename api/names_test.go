package api

import "testing"

func TestValidInterfaceName(t *testing.T) {
	for _, ok := range []string{"eth0", "net1", "a", "abcdefghijklmno"} {
		if !ValidInterfaceName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "et/h0", "eth:0", "eth 0", "abcdefghijklmnop"} {
		if ValidInterfaceName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
