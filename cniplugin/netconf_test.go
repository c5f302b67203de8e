package cniplugin

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfErrorsCarrySpecCodes(t *testing.T) {
	cases := map[string]struct {
		in   string
		code uint
	}{
		"not json":       {`{"cniVersion":`, types.ErrDecodingFailure},
		"no version":     {`{"name":"loom","type":"loom"}`, types.ErrInvalidNetworkConfig},
		"negative mtu":   {`{"cniVersion":"1.0.0","name":"loom","type":"loom","mtu":-1}`, types.ErrInvalidNetworkConfig},
		"bad prevResult": {`{"cniVersion":"1.0.0","name":"loom","type":"loom","prevResult":{"ips":"x"}}`, types.ErrDecodingFailure},
	}
	for name, c := range cases {
		_, err := parseConf([]byte(c.in))
		var ce *types.Error
		if !errors.As(err, &ce) || ce.Code != c.code {
			t.Errorf("%s: err = %v, want CNI code %d", name, err, c.code)
		}
	}
	conf, err := parseConf([]byte(`{"cniVersion":"1.1.0","name":"loom","type":"loom"}`))
	if err != nil || conf.Socket != "/run/loom/loom.sock" {
		t.Fatalf("default socket not applied: %+v %v", conf, err)
	}
}

func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"loom","type":"loom","socket":"/run/loom/loom.sock","mtu":1450}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"loom","type":"loom","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.244.1.2/32"}]}}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		conf, err := parseConf(b)
		if err == nil && conf.Socket == "" {
			t.Fatal("accepted config without a socket")
		}
	})
}
