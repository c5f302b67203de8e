package api

import "testing"

func TestValidInterfaceName(t *testing.T) {
	for _, ok := range []string{"eth0", "net1", "a", "abcdefghijklmno", "ø-net", "\xffx"} {
		if !ValidInterfaceName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "et/h0", "eth:0", "eth 0", "abcdefghijklmnop",
		"\ufffd\ufffd\ufffd\ufffd\ufffd0", "eth\x000", "eth\n0", "eth\xa00"} {
		if ValidInterfaceName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
